"""Store one fetched message: raw original first, then what the parser could read of it."""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from mailboxes import limits
from mailboxes.models import Attachment, Email, EmailDirection, Mailbox, ProcessingStatus
from mailboxes.parsing import ParsedAddress, ParsedEmail, parse_email

logger = logging.getLogger(__name__)

_HASH_CHUNK = 1 << 20
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
    if len(references) <= limits.MAX_REFERENCES:
        return references
    return [references[0], *references[-(limits.MAX_REFERENCES - 1) :]]


def _pairs(addresses: list[ParsedAddress]) -> list[list[str]]:
    return [
        [limits.cut_chars(address.name, 255), limits.cut_bytes(address.address, 320)] for address in addresses
    ]


@dataclass(frozen=True)
class WrittenAttachment:
    """An attachment whose payload is already in its file: only what its row needs stays."""

    name: str  # the stored file (our name, never the sender's)
    filename: str
    content_type: str
    size: int
    content_id: str
    is_inline: bool


@dataclass
class PreparedMessage:
    """A fetched message parsed and its files written, before any transaction is open
    (`email_prepare_fetched`): storing it then only inserts rows. `parsed` no longer holds the
    attachments' payloads (they are in the files), so a prepared batch costs little memory."""

    parsed: ParsedEmail
    identity: str
    raw_name: str
    size: int
    content_sha256: str
    attachments: list[WrittenAttachment]
    has_attachments: bool  # of all its parts, also those beyond MAX_ATTACHMENTS

    @property
    def attachment_names(self) -> list[str]:
        return [attachment.name for attachment in self.attachments]


def email_prepare_fetched(
    *,
    mailbox_id: int,
    uidvalidity: int,
    uid: int,
    raw: bytes,
    undelivered: bool = False,
    written_files: list[str] | None = None,
) -> PreparedMessage:
    """Everything about storing one fetched message that needs no database: parse it, compute its
    identity, write its raw original and attachment files. Never raises for bad content.

    Run before the batch's transaction, so that parsing (the costly part) never holds the
    database's write lock (SQLite) or the mailbox row lock (PostgreSQL): two workers parse at
    the same time. Every file written is appended to `written_files` at once, so the caller
    can delete them all if the batch is not stored (a duplicate's are deleted when storing
    finds it).
    """
    written = written_files if written_files is not None else []
    if undelivered:
        parsed = ParsedEmail.empty(problem=UNDELIVERED_PROBLEM)
        identity = hashlib.sha256(f"undelivered:{uidvalidity}:{uid}".encode()).hexdigest()
    else:
        try:
            parsed = parse_email(raw)
        except Exception as exc:
            logger.exception("parser failed on uid %s of mailbox %s", uid, mailbox_id)
            parsed = ParsedEmail.empty(problem=f"parser crashed: {type(exc).__name__}: {exc}")
        identity = message_identity(raw, parsed.message_id)
    # upload_to is a strftime pattern, which needs no instance (the stubs ask for one).
    raw_path = Email._meta.get_field("raw").generate_filename(None, f"{mailbox_id}-{uidvalidity}-{uid}.eml")  # type: ignore[arg-type]
    raw_name = default_storage.save(raw_path, ContentFile(raw))
    written.append(raw_name)
    attachments = _attachment_files_write(parsed, f"{mailbox_id}-{uidvalidity}-{uid}", written)
    has_attachments = any(not attachment.is_inline for attachment in parsed.attachments)
    parsed.attachments = []  # the payloads are in the files now
    return PreparedMessage(
        parsed=parsed,
        identity=identity,
        raw_name=raw_name,
        size=len(raw),
        content_sha256=hashlib.sha256(raw).hexdigest(),
        attachments=attachments,
        has_attachments=has_attachments,
    )


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
    prepared: PreparedMessage | None = None,
) -> StoreOutcome:
    """Store one message exactly once. Never raises for bad message content.

    The caller holds the transaction. Every fetched message becomes an Email row: the full form
    in a savepoint, and if the database or a library refuses that (a value no bound foresaw), a
    reduced form (raw original, identity, the short fields) with the reason in `parse_problem`,
    so that one message never rolls back its batch. Only a failure on our side that the reduced
    form hits too (database down, disk full) raises, as `EmailStoreFailed` naming the message.
    A duplicate (same identity already stored in this mailbox) is refused by the database
    constraint and reported, not stored twice (and the files written for it are deleted).

    `prepared`: the message as `email_prepare_fetched` made it before the transaction (the
    poll does this so that parsing holds no lock); without it the message is prepared here.

    `undelivered` (with raw=b""): a placeholder for a UID the server lists but never delivered,
    so that the gap is visible; it is never processed, and its identity is its UID (two
    placeholders are not the same message).
    """
    written = written_files if written_files is not None else []
    if prepared is None:
        prepared = email_prepare_fetched(
            mailbox_id=mailbox.pk,
            uidvalidity=uidvalidity,
            uid=uid,
            raw=raw,
            undelivered=undelivered,
            written_files=written,
        )
    parsed, identity = prepared.parsed, prepared.identity
    own = None if undelivered else _own_outgoing(mailbox, parsed)
    if own is not None:
        # Our own answer met again: the Sent folder is the polled folder, the server filed
        # it there, or a Bcc to the mailbox itself. Its bytes may differ from what we sent
        # (a Received line, a footer the server added), so the identity can't tell.
        logger.info(
            "mailbox %s UID %s: our own sent message (email %s), not stored again", mailbox.pk, uid, own
        )
        _forget_files([prepared.raw_name, *prepared.attachment_names], written)
        return StoreOutcome(email=None, duplicate_of=own)
    fields = ("pk", "direction", "from_address")
    existing = Email.objects.filter(mailbox=mailbox, identity=identity).values(*fields).first()
    if (
        existing is not None
        and existing["direction"] == EmailDirection.OUTGOING
        and existing["from_address"].lower() != parsed.from_address.lower()
    ):
        # Same Message-ID and body as one of our answers, but another From: a forgery or a broken
        # sender reusing our id. Stored, never dropped, under an identity of its own (so that its
        # next copy is still recognised as a duplicate of it).
        identity = hashlib.sha256(f"not-ours:{identity}:{parsed.from_address.lower()}".encode()).hexdigest()
        existing = Email.objects.filter(mailbox=mailbox, identity=identity).values(*fields).first()
    if existing is not None:
        _forget_files([prepared.raw_name, *prepared.attachment_names], written)
        return StoreOutcome(email=None, duplicate_of=existing["pk"])

    where = f"mailbox {mailbox.pk}, UID {uid}, Message-ID {limits.cut_chars(parsed.message_id, 200)!r}"
    problems = list(parsed.problems)
    received_at = limits.bounded_date(internal_date)
    if internal_date is not None and received_at is None:
        problems.append(f"server's INTERNALDATE {internal_date!r:.60} out of range: time of storing used")
    base = {
        "mailbox": mailbox,
        "uidvalidity": uidvalidity,
        "uid": uid,
        "raw": prepared.raw_name,
        "size": prepared.size,
        "content_sha256": prepared.content_sha256,
        "identity": identity,
        "received_at": received_at or timezone.now(),
        "is_history": is_history,
        "processing_status": (
            ProcessingStatus.SKIPPED if is_history or undelivered else ProcessingStatus.PENDING
        ),
    }
    try:
        with transaction.atomic():
            email = _email_full_form(base, parsed, problems, has_attachments=prepared.has_attachments)
            email.save()
            _attachments_store(email, prepared.attachments)
    except IntegrityError as exc:
        _forget_files(prepared.attachment_names, written)
        duplicate = _stored_already(base)
        if duplicate is not None:
            _forget_files([prepared.raw_name], written)
            return StoreOutcome(email=None, duplicate_of=duplicate)
        email = _email_reduced_form(base, parsed, problems, exc, where)
    except OSError:
        _forget_files(prepared.attachment_names, written)
        raise  # the disk, not the message: the batch is retried
    except Exception as exc:  # noqa: BLE001 - whatever this message's content broke, it is stored
        _forget_files(prepared.attachment_names, written)
        email = _email_reduced_form(base, parsed, problems, exc, where)
    return StoreOutcome(email=email)


def email_store_outgoing(
    *, mailbox: Mailbox, raw: bytes, sent_by_id: int | None, written_files: list[str] | None = None
) -> Email:
    """Store a message staff are sending as the mailbox: an outgoing Email, made from the exact
    bytes that go out (so what the thread shows is what was sent), never processed.

    Its identity is computed as the poll computes it, so a copy of it met later in the polled
    folder (a Bcc to the mailbox itself, a server that files sent mail there) is recognised as
    this email and not stored again. The caller holds the transaction; unlike fetched mail this
    is our own message, so a failure raises instead of storing a reduced form.
    """
    parsed = parse_email(raw)
    written = written_files if written_files is not None else []
    out_name = f"{mailbox.pk}-out-{uuid.uuid4().hex}.eml"
    raw_path = Email._meta.get_field("raw").generate_filename(None, out_name)  # type: ignore[arg-type]
    raw_name = default_storage.save(raw_path, ContentFile(raw))
    written.append(raw_name)
    base = {
        "mailbox": mailbox,
        "uidvalidity": None,
        "uid": None,
        "direction": EmailDirection.OUTGOING,
        "sent_by_id": sent_by_id,
        "raw": raw_name,
        "size": len(raw),
        "content_sha256": hashlib.sha256(raw).hexdigest(),
        "identity": message_identity(raw, parsed.message_id),
        "received_at": timezone.now(),
        "processing_status": ProcessingStatus.SKIPPED,
    }
    attachments = _attachment_files_write(parsed, f"{mailbox.pk}-out", written)
    with transaction.atomic():
        email = _email_full_form(
            base,
            parsed,
            list(parsed.problems),
            has_attachments=any(not attachment.is_inline for attachment in parsed.attachments),
        )
        email.save()
        _attachments_store(email, attachments)
    return email


def _own_outgoing(mailbox: Mailbox, parsed: ParsedEmail) -> int | None:
    """The outgoing email of `mailbox` that this fetched message is a copy of, if any: the same
    Message-ID AND From the mailbox's own address. A stranger reusing our Message-ID with another
    From is not ours and is stored.

    The parser already writes every Message-ID as "<id>" without whitespace (RFC 5322 §3.6.4:
    CFWS and folding are not part of it), so spellings with other brackets or folding compare
    equal; case is compared loosely too, since some servers rewrite it and our ids are random
    enough that two differing only in case are the same. Addresses compare case-insensitively.
    The query runs only for mail from the mailbox's own address, through the (mailbox,
    from_address) index.
    """
    own_address = mailbox.email.strip().lower()
    if not parsed.message_id or not own_address or parsed.from_address.strip().lower() != own_address:
        return None
    return (
        Email.objects.filter(
            mailbox=mailbox,
            direction=EmailDirection.OUTGOING,
            from_address__in={mailbox.email, own_address, parsed.from_address},
            message_id__iexact=parsed.message_id,
        )
        .order_by("pk")
        .values_list("pk", flat=True)
        .first()
    )


class EmailStoreFailed(Exception):
    """Even the reduced form of a message could not be stored: a failure on our side."""


def _email_full_form(
    base: dict[str, Any], parsed: ParsedEmail, problems: list[str], *, has_attachments: bool
) -> Email:
    date = limits.bounded_date(parsed.date)
    if parsed.date is not None and date is None:
        problems.append(f"Date header {parsed.date.isoformat()!r} out of range: not stored")
    subject = limits.cut_chars(parsed.subject, limits.MAX_SUBJECT_CHARS)
    if len(subject) < len(parsed.subject):
        problems.append(f"subject cut to {limits.MAX_SUBJECT_CHARS} of {len(parsed.subject)} characters")
    addresses = {}
    for name in ("reply_to", "to", "cc"):
        values = getattr(parsed, name)
        if len(values) > limits.MAX_ADDRESSES:
            problems.append(f"{name}: only the first {limits.MAX_ADDRESSES} of {len(values)} addresses kept")
        addresses[name] = _pairs(values[: limits.MAX_ADDRESSES])
    text_body = limits.cut_chars(parsed.text_body, limits.MAX_BODY_CHARS)
    html_body = limits.cut_chars(parsed.html_body, limits.MAX_BODY_CHARS)
    if len(text_body) < len(parsed.text_body) or len(html_body) < len(parsed.html_body):
        problems.append(f"body cut to {limits.MAX_BODY_CHARS} characters")
    email = Email(
        **base,
        message_id=parsed.message_id,
        in_reply_to=parsed.in_reply_to,
        references="\n".join(_capped_references(parsed.references)),
        subject=subject,
        from_name=parsed.from_name,
        from_address=parsed.from_address,
        **addresses,
        headers=[[name, value] for name, value in parsed.headers],
        date=date,
        text_body=text_body,
        html_body=html_body,
        has_attachments=has_attachments,
    )
    cuts: list[str] = []
    limits.fit_row(email, problems=cuts)
    email.parse_problem = "\n".join(problems + cuts)
    return email


def _attachment_files_write(parsed: ParsedEmail, prefix: str, written: list[str]) -> list[WrittenAttachment]:
    """Write the (first MAX_ATTACHMENTS) attachments' payloads to their files, no database."""
    field = Attachment._meta.get_field("file")
    attachments = []
    for index, part in enumerate(parsed.attachments[: limits.MAX_ATTACHMENTS]):
        # The stored name is ours (the sender's filename is only metadata): no path tricks.
        path = field.generate_filename(None, f"{prefix}-{index}-{uuid.uuid4().hex}.bin")  # type: ignore[arg-type]
        name = default_storage.save(path, ContentFile(part.payload))
        written.append(name)
        attachments.append(
            WrittenAttachment(
                name=name,
                filename=part.filename,
                content_type=part.content_type,
                size=part.size,
                content_id=part.content_id,
                is_inline=part.is_inline,
            )
        )
    return attachments


def _attachments_store(email: Email, attachments: list[WrittenAttachment]) -> None:
    rows = []
    for written in attachments:
        attachment = Attachment(
            email=email,
            file=written.name,
            filename=written.filename,
            content_type=written.content_type,
            size=written.size,
            content_id=written.content_id,
            is_inline=written.is_inline,
        )
        limits.fit_row(attachment)
        rows.append(attachment)
    Attachment.objects.bulk_create(rows)


def _email_reduced_form(
    base: dict[str, Any], parsed: ParsedEmail, problems: list[str], error: Exception, where: str
) -> Email:
    """The raw original, the identity and the short header fields: nothing a database or an index
    can refuse. Staff see it (with its problem) and can read the original."""
    logger.warning("email %s stored in reduced form: %s: %s", where, type(error).__name__, error)
    reason = (
        f"stored in reduced form ({type(error).__name__}: {limits.cut_chars(str(error), 300)}); "
        "bodies, headers, recipients and attachments were not stored: the raw original has them"
    )
    email = Email(
        **base,
        message_id=limits.cut_bytes(parsed.message_id, 255),
        in_reply_to=limits.cut_bytes(parsed.in_reply_to, 255),
        subject=limits.cut_chars(parsed.subject, 255),
        from_name=limits.cut_chars(parsed.from_name, 255),
        from_address=limits.cut_bytes(parsed.from_address, 320),
        parse_problem="\n".join([reason, *problems[:50]]),
    )
    limits.fit_row(email)
    try:
        with transaction.atomic():
            email.save()
    except Exception as exc:
        raise EmailStoreFailed(f"{where}: {type(exc).__name__}: {exc}") from exc
    return email


def _stored_already(base: dict[str, Any]) -> int | None:
    """The email that makes this one a duplicate: same identity, or same UID of the folder."""
    same = Q(identity=base["identity"]) | Q(uidvalidity=base["uidvalidity"], uid=base["uid"])
    return Email.objects.filter(same, mailbox=base["mailbox"]).values_list("pk", flat=True).first()


def _forget_files(names: list[str], written: list[str]) -> None:
    """Delete files written for a message that is not stored (or not with them)."""
    for name in names:
        default_storage.delete(name)
        if name in written:
            written.remove(name)
