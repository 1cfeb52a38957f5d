"""Store one fetched message: raw original first, then what the parser could read of it."""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from mailboxes.models import Attachment, Email, Mailbox, ProcessingStatus
from mailboxes.parsing import ParsedAddress, ParsedEmail, parse_email

logger = logging.getLogger(__name__)

# Column widths of Email; longer header values are cut (the raw original keeps them whole).
_MAX_ID = 998
_MAX_NAME = 255
_MAX_ADDRESS = 320
_HASH_CHUNK = 1 << 20
_MAX_REFERENCES = 100


UNDELIVERED_PROBLEM = "server did not deliver this message"


@dataclass(frozen=True)
class StoreOutcome:
    email: Email | None  # None when the message was already stored (a duplicate)
    duplicate_of: int | None = None


def message_identity(raw: bytes, message_id: str) -> str:
    """What makes two fetched messages the same message, across UIDVALIDITY changes.

    The body (after the first blank line, RFC 5322 §2.1) plus the Message-ID: servers add trace
    headers when a folder is copied or migrated, and some broken senders reuse Message-IDs, so
    neither the whole raw hash nor the Message-ID alone would do.
    """
    header_end = raw.find(b"\r\n\r\n")
    if header_end < 0:
        header_end = raw.find(b"\n\n")
    digest = hashlib.sha256()
    if message_id:
        digest.update(b"mid:" + message_id.encode("utf-8", "replace") + b"\0")
    else:
        # No Message-ID: the sender, date and subject headers as written stand in for it.
        digest.update(b"nomid:" + _headers_for_identity(raw, header_end) + b"\0")
    # CRs are dropped so that CRLF and LF copies of a message match; chunked over a memoryview so
    # that a 30 MB message is not copied whole (twice) just to be hashed.
    body = memoryview(raw)[max(header_end, 0) :]
    for start in range(0, len(body), _HASH_CHUNK):
        digest.update(bytes(body[start : start + _HASH_CHUNK]).replace(b"\r", b""))
    return digest.hexdigest()


def _headers_for_identity(raw: bytes, header_end: int) -> bytes:
    head = raw[: header_end if header_end >= 0 else len(raw)]
    wanted = (b"from:", b"date:", b"subject:", b"to:")
    return b"\n".join(line.strip() for line in head.splitlines() if line.lower().startswith(wanted))


def _capped_references(references: list[str]) -> list[str]:
    """The first and the newest ids are what threading needs (RFC 5322 §3.6.4 trims the same
    way); a hostile References with 70,000 ids would otherwise ride along on every lookup."""
    if len(references) <= _MAX_REFERENCES:
        return references
    return [references[0], *references[-(_MAX_REFERENCES - 1) :]]


def _pairs(addresses: list[ParsedAddress]) -> list[list[str]]:
    return [[address.name[:_MAX_NAME], address.address[:_MAX_ADDRESS]] for address in addresses]


def email_store_fetched(
    *,
    mailbox: Mailbox,
    uidvalidity: int,
    uid: int,
    raw: bytes,
    internal_date: datetime | None,
    is_history: bool,
    written_files: list[str] | None = None,
    undelivered: bool = False,
) -> StoreOutcome:
    """Store one message exactly once. Never raises for bad message content.

    The caller holds the transaction; a duplicate (same identity already stored in this mailbox)
    is refused by the database constraint inside a savepoint and reported, not stored twice.

    `undelivered` (with raw=b""): a placeholder for a UID the server lists but never delivered,
    so that the gap is visible; it is never processed, and its identity is its UID (two
    placeholders are not the same message).
    """
    if undelivered:
        parsed = ParsedEmail.empty(problem=UNDELIVERED_PROBLEM)
        identity = hashlib.sha256(f"undelivered:{uidvalidity}:{uid}".encode()).hexdigest()
    else:
        try:
            parsed = parse_email(raw)
        except Exception as exc:
            logger.exception("parser failed on uid %s of mailbox %s", uid, mailbox.pk)
            parsed = ParsedEmail.empty(problem=f"parser crashed: {type(exc).__name__}: {exc}")
        identity = message_identity(raw, parsed.message_id)
    existing = Email.objects.filter(mailbox=mailbox, identity=identity).values_list("pk", flat=True).first()
    if existing is not None:
        return StoreOutcome(email=None, duplicate_of=existing)

    email = Email(
        mailbox=mailbox,
        uidvalidity=uidvalidity,
        uid=uid,
        message_id=parsed.message_id[:_MAX_ID],
        in_reply_to=parsed.in_reply_to[:_MAX_ID],
        references="\n".join(_capped_references(parsed.references)),
        subject=parsed.subject,
        from_name=parsed.from_name[:_MAX_NAME],
        from_address=parsed.from_address[:_MAX_ADDRESS],
        reply_to=_pairs(parsed.reply_to),
        to=_pairs(parsed.to),
        cc=_pairs(parsed.cc),
        headers=[[name, value] for name, value in parsed.headers],
        date=parsed.date,
        received_at=internal_date or timezone.now(),
        text_body=parsed.text_body,
        html_body=parsed.html_body,
        size=len(raw),
        content_sha256=hashlib.sha256(raw).hexdigest(),
        identity=identity,
        has_attachments=any(not attachment.is_inline for attachment in parsed.attachments),
        parse_problem="\n".join(parsed.problems),
        is_history=is_history,
        processing_status=ProcessingStatus.SKIPPED if is_history or undelivered else ProcessingStatus.PENDING,
    )
    written = written_files if written_files is not None else []
    email.raw.save(f"{mailbox.pk}-{uidvalidity}-{uid}.eml", ContentFile(raw), save=False)
    written.append(email.raw.name)
    try:
        with transaction.atomic():
            email.save()
    except IntegrityError:
        default_storage.delete(email.raw.name)
        written.remove(email.raw.name)
        duplicate = Email.objects.filter(mailbox=mailbox, identity=identity).values_list("pk", flat=True)
        if not duplicate:
            raise  # not a duplicate: a real constraint problem the caller must see
        return StoreOutcome(email=None, duplicate_of=duplicate.first())

    attachments = []
    for index, part in enumerate(parsed.attachments):
        attachment = Attachment(
            email=email,
            filename=part.filename,
            content_type=part.content_type[:255],
            size=part.size,
            content_id=part.content_id[:_MAX_ID],
            is_inline=part.is_inline,
        )
        # The stored name is ours (the sender's filename is only metadata): no path tricks.
        stored_name = f"{email.pk}-{index}-{uuid.uuid4().hex}.bin"
        attachment.file.save(stored_name, ContentFile(part.payload), save=False)
        written.append(attachment.file.name)
        attachments.append(attachment)
    Attachment.objects.bulk_create(attachments)
    return StoreOutcome(email=email)
