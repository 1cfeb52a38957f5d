"""The users of the staff pages, as types: who may ask a selector, and who a signed-in view has."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import HttpRequest

if TYPE_CHECKING:
    # AUTH_USER_MODEL is Django's own (mailhub/settings.py sets none), so this is what
    # get_user_model() returns.
    from django.contrib.auth.models import User

# Who asks a selector: a page's `request.user` (an anonymous one is granted nothing), or a user
# loaded by id.
AnyUser: TypeAlias = AbstractBaseUser | AnonymousUser


class AuthenticatedHttpRequest(HttpRequest):
    """The request of a `login_required` view, whose user is signed in.

    Only a type: Django builds the request; a view annotated with it must carry the decorator.
    """

    user: User
