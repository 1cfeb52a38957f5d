"""The one rule of who may see a mailbox, as query conditions. No queries are run here.

Superusers see every mailbox; other active users see the mailboxes granted to them directly or
to one of their groups (Django groups are the roles); inactive or anonymous users see none.
`Mailbox.objects.accessible_to` reads it from the user's side (every page, download, admin
queryset and admin action goes through that), `users_granted_q` from the mailbox's side
(choosing an assignee): both are written from the same three grants below.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, TypeAlias

from django.contrib.auth.models import AbstractUser, AnonymousUser
from django.db.models import Q

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from .models import Mailbox

# AUTH_USER_MODEL is Django's own User (an AbstractUser: it has groups and is_superuser).
AnyUser: TypeAlias = AbstractUser | AnonymousUser


class Reach(Enum):
    """How much of the mailboxes a user reaches."""

    NOTHING = "nothing"
    EVERYTHING = "everything"
    GRANTED = "granted"  # the rows that `mailboxes_granted_q(user)` matches


def mailbox_reach(user: AnyUser | None) -> Reach:
    if user is None or not user.is_authenticated or not user.is_active:
        return Reach.NOTHING
    if user.is_superuser:
        return Reach.EVERYTHING
    return Reach.GRANTED


def mailboxes_granted_q(user: AnyUser) -> Q:
    """Condition on Mailbox rows: granted to `user` directly or to one of their groups.

    Only meaningful for `Reach.GRANTED`; it may match a mailbox twice (two grants), so callers
    filter with it in a subquery.
    """
    return Q(authorized_users=user) | Q(authorized_groups__in=user.groups.all())


def users_granted_q(mailbox: Mailbox) -> Q:
    """Condition on User rows: the users who may see `mailbox` (a user may match twice)."""
    return _users_granted("", mailbox)


def users_granted_any_q(mailboxes: QuerySet[Mailbox]) -> Q:
    """Condition on User rows: the users who may see at least one of `mailboxes`."""
    return _users_granted("__in", mailboxes)


def _users_granted(lookup: str, value: object) -> Q:
    grants = Q(**{f"authorized_mailboxes{lookup}": value})
    grants |= Q(**{f"groups__authorized_mailboxes{lookup}": value})
    return Q(is_active=True) & (Q(is_superuser=True) | grants)
