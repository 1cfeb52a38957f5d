"""What a staff user has seen and chosen in My Emails (rows of their own, per user)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.utils import timezone

from mailboxes.models import Mailbox, MailboxViewPreference, MailboxVisit

if TYPE_CHECKING:
    from django.contrib.auth.models import User  # AUTH_USER_MODEL


def mailbox_visits_record(*, user: User, seen_up_to: dict[int, int]) -> None:
    """Mark each mailbox (id -> email id) seen up to that email: one upsert whatever their number."""
    now = timezone.now()
    MailboxVisit.objects.bulk_create(
        [
            MailboxVisit(user=user, mailbox_id=pk, seen_up_to_email_id=email_id, visited_at=now)
            for pk, email_id in seen_up_to.items()
        ],
        update_conflicts=True,
        unique_fields=["user", "mailbox"],
        update_fields=["seen_up_to_email_id", "visited_at"],
    )


def mailbox_view_choose(*, user: User, mailbox: Mailbox | None) -> None:
    """Remember the view (None: all my mailboxes); the caller has checked that `user` may see
    `mailbox`."""
    MailboxViewPreference.objects.update_or_create(user=user, defaults={"mailbox": mailbox})
