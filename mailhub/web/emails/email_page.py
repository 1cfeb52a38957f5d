"""What an email's page shows (its thread, attachments, text body, auto-replies), and the emails
listed on a case's or a lead's page: each bounded whatever was stored."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Q, QuerySet
from django.db.models.functions import Length, Substr

from autoresponse.models import AutoReply
from mailboxes.models import Attachment, Email
from mailhub.web.users import AnyUser
from processing.services.threads import referenced_message_ids

from .access import emails_visible_to
from .grid import SNIPPET_LENGTH

# What an email's page, a case's or a lead's page show is bounded whatever was stored (storing
# caps what it keeps, but a page must not depend on that): with these, the email page of a
# message with 1,000 attachments and a 5 MB text body stays under 1.5 MB
# (tests/mailhub/web/test_page_bounds.py) instead of 20 MB. What is cut is said on the page, with
# the raw original as a download.
THREAD_LIMIT = 50
ATTACHMENTS_SHOWN = 200
INLINE_IMAGES_LIMIT = 200  # cid: images mapped into the HTML frame
TEXT_BODY_SHOWN = 1_000_000  # characters of the text body
EMAILS_PER_RECORD_PAGE = 50  # the emails of a case or a lead, per page


def email_thread(*, user: AnyUser, email: Email) -> list[Email]:
    """Other emails of the conversation: those of its case, otherwise those it references
    (In-Reply-To, References) and those that reply to it (RFC 5322 §3.6.4), in one mailbox."""
    emails = emails_visible_to(user).exclude(pk=email.pk)
    if email.case_id:
        emails = emails.filter(case_id=email.case_id)
    else:
        referenced = referenced_message_ids(email)
        related = Q(message_id__in=referenced) if referenced else Q()
        if email.message_id:
            related |= Q(in_reply_to=email.message_id)
        if not related:
            return []
        emails = emails.filter(related, mailbox_id=email.mailbox_id)
    return list(
        emails.only("pk", "subject", "from_name", "from_address", "received_at").order_by(
            "received_at", "pk"
        )[:THREAD_LIMIT]
    )


@dataclass(frozen=True)
class AttachmentList:
    shown: list[Attachment]  # the first ATTACHMENTS_SHOWN, in their order in the message
    total: int

    @property
    def not_shown(self) -> int:
        return self.total - len(self.shown)


def email_attachments(*, email: Email, limit: int = ATTACHMENTS_SHOWN) -> AttachmentList:
    """The first attachments of an email the caller already got through `email_get_for_user`,
    and how many it has: two queries, whatever their number."""
    shown = list(email.attachments.order_by("pk")[:limit])
    total = len(shown) if len(shown) < limit else email.attachments.count()
    return AttachmentList(shown=shown, total=total)


def email_inline_images(*, email: Email, content_types: frozenset[str]) -> list[Attachment]:
    """The cid: images of an email (RFC 2392), at most INLINE_IMAGES_LIMIT."""
    return list(
        email.attachments.exclude(content_id="")
        .filter(content_type__in=content_types)
        .order_by("pk")[:INLINE_IMAGES_LIMIT]
    )


@dataclass(frozen=True)
class TextBody:
    text: str  # at most TEXT_BODY_SHOWN characters
    length: int  # of the whole body

    @property
    def is_cut(self) -> bool:
        return self.length > len(self.text)


def email_text_body(*, email: Email) -> TextBody:
    """The start of the text body, cut in the database: a 50 MB body is not read for a page."""
    row = (
        Email.objects.filter(pk=email.pk)
        .annotate(shown=Substr("text_body", 1, TEXT_BODY_SHOWN), length=Length("text_body"))
        .values("shown", "length")
        .first()
    )
    if row is None:
        return TextBody(text="", length=0)
    return TextBody(text=row["shown"] or "", length=row["length"] or 0)


def email_auto_replies(*, email: Email) -> list[AutoReply]:
    return list(AutoReply.objects.filter(email=email).order_by("created_at", "pk")[:THREAD_LIMIT])


def emails_of_case(*, user: AnyUser, case_id: int) -> QuerySet[Email]:
    """Emails of a case, oldest first, for its page: see `_emails_of_record`."""
    return _emails_of_record(emails_visible_to(user).filter(case_id=case_id))


def emails_of_lead(*, user: AnyUser, lead_id: int) -> QuerySet[Email]:
    """Emails of a lead, oldest first, for its page: see `_emails_of_record`."""
    return _emails_of_record(emails_visible_to(user).filter(lead_id=lead_id))


def _emails_of_record(emails: QuerySet[Email]) -> QuerySet[Email]:
    """The emails of a case's or a lead's page (the grid's columns only), oldest first; the page
    shows them EMAILS_PER_RECORD_PAGE at a time."""
    return (
        emails.only("pk", "subject", "from_name", "from_address", "received_at", "has_attachments")
        .annotate(snippet=Substr("text_body", 1, SNIPPET_LENGTH))
        .order_by("received_at", "pk")
    )
