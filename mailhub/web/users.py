"""The users of the staff pages, as types: who may ask a selector, and who a signed-in view has."""

from __future__ import annotations

from typing import TypeAlias

from django.contrib.auth.models import AnonymousUser, User
from django.http import HttpRequest

# Who asks a selector: a page's `request.user` (an anonymous one is granted nothing), or a user
# loaded by id. AUTH_USER_MODEL is Django's own User (mailhub/settings.py sets none), which is
# what get_user_model() returns and what the grant rule (mailboxes/access.py) reads.
AnyUser: TypeAlias = User | AnonymousUser


class AuthenticatedHttpRequest(HttpRequest):
    """The request of a `login_required` view, whose user is signed in.

    Only a type: Django builds the request; a view annotated with it must carry the decorator.
    """

    user: User
