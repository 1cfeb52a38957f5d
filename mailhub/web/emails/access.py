"""Who may see what on the staff pages: mailboxes, emails and attachments a user may see.

Every function starts from `Mailbox.objects.accessible_to(user)`, the one rule of access; a view
never builds its own queryset of emails. "Not visible" and "does not exist" look the same (None),
so a page cannot reveal that something exists in a mailbox the reader has no access to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.db.models import QuerySet

from mailboxes.access import users_granted_q
from mailboxes.models import Attachment, Email, Mailbox
from mailhub.web.users import AnyUser

if TYPE_CHECKING:
    from django.contrib.auth.models import User

# The pages never need a mailbox's IMAP and SMTP passwords, so no mailbox they load carries
# them, not even as ciphertext (loading never decrypts: see mailboxes/encryption.py).
MAILBOX_SECRETS = ("imap_password", "smtp_password")


def without_mailbox_secrets(relation: str = "") -> list[str]:
    """Fields to defer: the secrets of a mailbox, or of the mailbox behind `relation`."""
    return [f"{relation}__{name}" if relation else name for name in MAILBOX_SECRETS]


def mailboxes_visible_to(user: AnyUser) -> QuerySet[Mailbox]:
    return Mailbox.objects.accessible_to(user).defer(*without_mailbox_secrets())


def mailbox_get_for_user(*, user: AnyUser, pk: int) -> Mailbox | None:
    return mailboxes_visible_to(user).filter(pk=pk).first()


def emails_visible_to(user: AnyUser) -> QuerySet[Email]:
    return Email.objects.filter(mailbox__in=Mailbox.objects.accessible_to(user))


def email_get_for_user(*, user: AnyUser, pk: int, defer: tuple[str, ...] = ()) -> Email | None:
    """`defer`: fields the caller does not need loaded (the page reads only the start of the
    text body, see `email_text_body`)."""
    return (
        emails_visible_to(user)
        .select_related("mailbox", "lead", "case")
        .defer(*without_mailbox_secrets("mailbox"), *defer)
        .filter(pk=pk)
        .first()
    )


def attachment_get_for_user(*, user: AnyUser, email_pk: int, attachment_pk: int) -> Attachment | None:
    return (
        Attachment.objects.filter(email__in=emails_visible_to(user))
        .filter(pk=attachment_pk, email_id=email_pk)
        .first()
    )


def users_with_access_to(*, mailbox: Mailbox) -> QuerySet[User]:
    """Active users who may see `mailbox`: the rule of `accessible_to`, read the other way round
    (for choosing an assignee). tests/mailhub/web/test_cases_and_leads.py checks that both agree."""
    user_model = get_user_model()
    granted = user_model.objects.filter(users_granted_q(mailbox)).values("pk")
    return user_model.objects.filter(pk__in=granted).order_by("username")
