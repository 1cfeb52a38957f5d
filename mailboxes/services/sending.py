"""Send what staff wrote as the mailbox, at most once.

The outgoing email and its OutboundMessage are created together (processing's answer service)
with the message's bytes as the email's raw original. Sending claims the row with a conditional
UPDATE (pending -> sending), so a rerun, a retry, a double click or a second worker never puts a
second copy on the wire. When nobody can know whether the server accepted the message (the
connection died after the final dot, or a worker died while the row was `sending`), the row
becomes `uncertain`: never retried automatically; a person sends it again after checking
(`outbound_send_again`). A failed row is shown with its reason and can be sent again too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from django.conf import settings
from django.db.models import F, Q, Value
from django.db.models.functions import Concat
from django.utils import timezone

from mailboxes.backoff import backoff_delay
from mailboxes.encryption import SecretDecryptionError
from mailboxes.imap import ImapError, imap_session
from mailboxes.models import Mailbox, OutboundMessage, OutboundStatus, SentCopyStatus
from mailboxes.smtp import SmtpError, smtp_send_raw

from .oauth import mailbox_run_smtp

logger = logging.getLogger("mailhub.sending")

MAX_SEND_ATTEMPTS = 6


def stale_sending_after() -> timedelta:
    """How long a row may stay 'sending' before it counts as a worker that died mid-send.

    Longer than the longest send that is still alive: a connection, the commands (each up to
    MAILHUB_NETWORK_TIMEOUT) and the wait for the final reply (MAILHUB_SMTP_DATA_TIMEOUT, 10
    minutes by RFC 5321 §4.5.3.2.6), plus a margin. A shorter bound would mark a slow but live
    send 'uncertain', and sending it again could then put a second copy on the wire.
    """
    live = settings.MAILHUB_SMTP_DATA_TIMEOUT + 10 * settings.MAILHUB_NETWORK_TIMEOUT
    return max(timedelta(minutes=15), timedelta(seconds=live) + timedelta(minutes=5))


def send_retry_delay(attempts: int) -> timedelta:
    return backoff_delay(attempt=attempts, first=30, cap=3600, jitter=0.2)


class SendResult(StrEnum):
    """What one claimed SMTP send came to (the values are those of the rows' statuses)."""

    SENT = "sent"
    RETRY = "pending"  # transient: try again after `next_attempt_at`
    FAILED = "failed"  # permanent, or out of attempts
    UNCERTAIN = "uncertain"  # may have been delivered: never sent again automatically


@dataclass(frozen=True)
class SendOutcome:
    result: SendResult
    reason: str = ""
    next_attempt_at: datetime | None = None
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)


def smtp_send_claimed(
    *, mailbox: Mailbox, recipients: list[str], message: bytes, attempts: int, label: str
) -> SendOutcome:
    """The one rule of a claimed send, for auto-replies and staff's answers alike: send through
    the mailbox's SMTP (password, or an OAuth2 token with one retry if refused: the login fails
    before MAIL FROM, so nothing can go out twice) and say what the caller records.

    After the final dot without the server's answer, or on an error that is not a translated SMTP
    error (where it happened is unknown), the message may be out: UNCERTAIN. A transient error
    is RETRY with a backoff time until `attempts` reaches MAX_SEND_ATTEMPTS; a permanent one is
    FAILED. Recipients refused while others accepted are SENT with `refused` (RFC 5321 §3.3:
    a retry would give the others a second copy)."""
    try:
        refused = mailbox_run_smtp(
            mailbox=mailbox,
            run=lambda smtp: smtp_send_raw(
                smtp, sender=mailbox.email, recipients=recipients, message=message
            ),
        )
    except SmtpError as exc:
        if exc.ambiguous:
            return SendOutcome(
                SendResult.UNCERTAIN,
                f"{exc}; not sent again automatically: check with the recipient before sending again",
            )
        if exc.permanent or attempts >= MAX_SEND_ATTEMPTS:
            return SendOutcome(SendResult.FAILED, str(exc))
        return SendOutcome(
            SendResult.RETRY, str(exc), next_attempt_at=timezone.now() + send_retry_delay(attempts)
        )
    except Exception as exc:
        logger.exception("%s: unexpected error while sending", label)
        return SendOutcome(
            SendResult.UNCERTAIN,
            f"unexpected {type(exc).__name__} while sending; not sent again automatically",
        )
    return SendOutcome(SendResult.SENT, refused=refused)


def outbound_send(*, outbound_id: int) -> OutboundMessage:
    """Send one pending outgoing message at most once. Transient SMTP errors leave it pending with
    a backoff time (bounded attempts); permanent ones (5xx, bad login, undecryptable secret) fail
    it with the reason; an unknown outcome makes it `uncertain`. Never left `sending`."""
    now = timezone.now()
    claimed = (
        OutboundMessage.objects.filter(pk=outbound_id, status=OutboundStatus.PENDING)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .update(status=OutboundStatus.SENDING, claimed_at=now, attempts=F("attempts") + 1)
    )
    outbound = OutboundMessage.objects.select_related("email").get(pk=outbound_id)
    if not claimed:
        return outbound
    email = outbound.email
    try:
        # Loaded here, not joined above: a mailbox whose secret can't be decrypted fails only its
        # own sends, recorded on this row.
        mailbox = Mailbox.objects.get(pk=email.mailbox_id)
        mailbox.smtp_settings()  # an undecryptable password fails here, recorded on this row
    except SecretDecryptionError as exc:
        return _finish(outbound, OutboundStatus.FAILED, f"SMTP password of the mailbox unusable: {exc}")
    if not mailbox.smtp_host:
        return _finish(outbound, OutboundStatus.FAILED, "the mailbox has no SMTP server configured")
    try:
        with email.raw.open("rb") as stored:
            message = stored.read()
    except OSError as exc:
        return _finish(outbound, OutboundStatus.FAILED, f"the stored message can't be read: {exc}")
    outcome = smtp_send_claimed(
        mailbox=mailbox,
        recipients=list(outbound.envelope_recipients),
        message=message,
        attempts=outbound.attempts,
        label=f"outbound {outbound.pk}",
    )
    if outcome.result != SendResult.SENT:
        return _finish(
            outbound,
            OutboundStatus(outcome.result.value),
            outcome.reason,
            next_attempt_at=outcome.next_attempt_at,
        )
    refused = outcome.refused
    outbound.status, outbound.sent_at = OutboundStatus.SENT, timezone.now()
    # Delivered to the accepted recipients; the refused ones are said, never retried (a retry
    # would give the others a second copy).
    outbound.reason = (
        "refused by the server: "
        + "; ".join(f"{rcpt} ({code} {text})" for rcpt, (code, text) in refused.items())
        if refused
        else ""
    )
    outbound.save(update_fields=["status", "sent_at", "reason"])
    return outbound


def _finish(
    outbound: OutboundMessage, status: OutboundStatus, reason: str, *, next_attempt_at: datetime | None = None
) -> OutboundMessage:
    outbound.status, outbound.reason, outbound.next_attempt_at = status, reason, next_attempt_at
    outbound.save(update_fields=["status", "reason", "next_attempt_at"])
    logger.warning("outbound %s not sent (%s): %s", outbound.pk, status, reason)
    return outbound


# Rows a person may send again: they did not go out, or nobody knows whether they did.
SENDABLE_AGAIN = (OutboundStatus.FAILED, OutboundStatus.UNCERTAIN)


def outbound_send_again(*, outbound_id: int, requested_by: str, uncertain_checked: bool) -> bool:
    """Put a failed message back to pending (a person asked), and an uncertain one only when the
    person said they checked it did not arrive (`uncertain_checked`). A conditional UPDATE: a
    double click or two people move it once. The confirmation is part of the UPDATE's condition,
    not checked on an earlier read: a row read as failed may have been sent again by another
    click and become uncertain before this UPDATE runs. Returns whether it moved; the caller
    dispatches the send."""
    sendable = SENDABLE_AGAIN if uncertain_checked else (OutboundStatus.FAILED,)
    moved = OutboundMessage.objects.filter(pk=outbound_id, status__in=sendable).update(
        status=OutboundStatus.PENDING,
        next_attempt_at=None,
        attempts=0,
        reason=Concat(Value(f"sent again by {requested_by}; before: "), F("reason")),
    )
    return bool(moved)


def outbounds_mark_stale_sending(*, mailbox_id: int) -> int:
    """Rows left 'sending' longer than `stale_sending_after()` belong to a worker that died
    mid-send: they become 'uncertain', never resent automatically. Returns how many."""
    return OutboundMessage.objects.filter(
        email__mailbox_id=mailbox_id,
        status=OutboundStatus.SENDING,
        claimed_at__lt=timezone.now() - stale_sending_after(),
    ).update(
        status=OutboundStatus.UNCERTAIN,
        reason="interrupted while sending (outcome unknown); not sent again automatically so that "
        "no second copy can go out",
    )


def outbounds_due(*, mailbox_id: int, created_before: datetime | None) -> list[int]:
    """Pending sends of the mailbox whose backoff is over and that lost their task (created
    before `created_before`; None: all of them)."""
    due = OutboundMessage.objects.filter(email__mailbox_id=mailbox_id, status=OutboundStatus.PENDING).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=timezone.now())
    )
    if created_before is not None:
        due = due.filter(Q(created_at__lt=created_before) | Q(next_attempt_at__isnull=False))
    return list(due.order_by("pk").values_list("pk", flat=True)[:200])


# --- The copy in the Sent folder -------------------------------------------------------------
#
# After the send, the same bytes are appended over IMAP to the mailbox's Sent folder, flagged
# \Seen, so that people who read the mailbox in a mail client see the team's answers. The copy
# is claimed like the send (pending -> appending); what makes a retry safe is that the folder is
# searched for the Message-ID before every APPEND: an APPEND whose answer was lost (or whose
# worker died) left either no copy, and the next attempt appends one, or a copy, which the search
# finds. So an interrupted copy goes back to pending, unlike an interrupted send.

MAX_SENT_COPY_ATTEMPTS = 6
SEEN = b"\\Seen"


def stale_appending_after() -> timedelta:
    """How long a copy may stay 'appending' before its worker counts as dead: a login, an
    EXAMINE, a SEARCH, a FETCH, an APPEND (maybe twice, with a CREATE), each bounded by
    MAILHUB_NETWORK_TIMEOUT, plus a margin. Going back to pending too early is harmless (the
    search finds a copy that got there), only wasteful."""
    return timedelta(seconds=10 * settings.MAILHUB_NETWORK_TIMEOUT) + timedelta(minutes=5)


def sent_copy_retry_delay(attempts: int) -> timedelta:
    return backoff_delay(attempt=attempts, first=60, cap=3600, jitter=0.2)


def outbound_copy_to_sent(*, outbound_id: int) -> OutboundMessage:
    """Append a SENT message's bytes to its mailbox's Sent folder, at most once.

    Only a sent message whose copy is pending (and whose backoff is over) is claimed. No Sent
    folder configured: not_wanted. The folder is searched for the Message-ID first and the copy
    is appended only if none is there. Permanent IMAP errors (and an undecryptable IMAP secret)
    fail the copy with the reason; transient ones put it back to pending with a backoff, bounded.
    Nothing here ever changes the send's own status.
    """
    now = timezone.now()
    claimed = (
        OutboundMessage.objects.filter(
            pk=outbound_id, status=OutboundStatus.SENT, sent_copy_status=SentCopyStatus.PENDING
        )
        .filter(Q(sent_copy_next_attempt_at__isnull=True) | Q(sent_copy_next_attempt_at__lte=now))
        .update(
            sent_copy_status=SentCopyStatus.APPENDING,
            sent_copy_claimed_at=now,
            sent_copy_attempts=F("sent_copy_attempts") + 1,
        )
    )
    outbound = OutboundMessage.objects.select_related("email").get(pk=outbound_id)
    if not claimed:
        return outbound
    email = outbound.email
    mailbox = Mailbox.objects.get(pk=email.mailbox_id)
    folder = mailbox.imap_sent_folder.strip()
    if not folder:
        return _copy_finish(outbound, SentCopyStatus.NOT_WANTED, "")
    if not email.message_id:
        # Without an id the search-first rule can't work: a retry could append a second copy.
        return _copy_finish(outbound, SentCopyStatus.FAILED, "the message has no Message-ID to find it again")
    try:
        imap = mailbox.imap_settings()
    except SecretDecryptionError as exc:
        return _copy_finish(outbound, SentCopyStatus.FAILED, f"IMAP password of the mailbox unusable: {exc}")
    try:
        with email.raw.open("rb") as stored:
            message = stored.read()
    except OSError as exc:
        return _copy_finish(outbound, SentCopyStatus.FAILED, f"the stored message can't be read: {exc}")
    try:
        with imap_session(imap) as connection:
            if connection.find_message_id(folder, email.message_id):
                logger.info("outbound %s: already in folder %r, not appended again", outbound.pk, folder)
            else:
                connection.append_message(folder, message, flags=(SEEN,), when=outbound.sent_at)
    except ImapError as exc:
        if exc.permanent or outbound.sent_copy_attempts >= MAX_SENT_COPY_ATTEMPTS:
            return _copy_finish(outbound, SentCopyStatus.FAILED, str(exc))
        return _copy_finish(
            outbound,
            SentCopyStatus.PENDING,
            str(exc),
            next_attempt_at=timezone.now() + sent_copy_retry_delay(outbound.sent_copy_attempts),
        )
    except Exception as exc:
        # A bug or an unforeseen library error: only its type in the row (its text may quote what
        # it choked on); retried like a transient error, which the search-first rule makes safe.
        logger.exception("outbound %s: unexpected error while copying to the Sent folder", outbound.pk)
        reason = f"unexpected {type(exc).__name__} while appending to the Sent folder"
        if outbound.sent_copy_attempts >= MAX_SENT_COPY_ATTEMPTS:
            return _copy_finish(outbound, SentCopyStatus.FAILED, reason)
        return _copy_finish(
            outbound,
            SentCopyStatus.PENDING,
            reason,
            next_attempt_at=timezone.now() + sent_copy_retry_delay(outbound.sent_copy_attempts),
        )
    return _copy_finish(outbound, SentCopyStatus.DONE, "")


def _copy_finish(
    outbound: OutboundMessage, status: SentCopyStatus, error: str, *, next_attempt_at: datetime | None = None
) -> OutboundMessage:
    outbound.sent_copy_status, outbound.sent_copy_error = status, error
    outbound.sent_copy_next_attempt_at = next_attempt_at
    outbound.save(update_fields=["sent_copy_status", "sent_copy_error", "sent_copy_next_attempt_at"])
    if error:
        logger.warning("outbound %s: Sent-folder copy %s: %s", outbound.pk, status, error)
    return outbound


def outbound_copies_reset_stale(*, mailbox_id: int) -> int:
    """Copies left 'appending' longer than `stale_appending_after()` belong to a worker that died:
    back to pending, which the search-first rule makes safe. Returns how many."""
    return OutboundMessage.objects.filter(
        email__mailbox_id=mailbox_id,
        sent_copy_status=SentCopyStatus.APPENDING,
        sent_copy_claimed_at__lt=timezone.now() - stale_appending_after(),
    ).update(
        sent_copy_status=SentCopyStatus.PENDING,
        sent_copy_next_attempt_at=None,
        sent_copy_error="interrupted while appending; tried again (the folder is searched first)",
    )


def outbound_copies_due(*, mailbox_id: int, sent_before: datetime | None) -> list[int]:
    """Sent messages of the mailbox whose copy is pending, whose backoff is over and that lost
    their task (sent before `sent_before`, or waiting for a backoff; None: all of them)."""
    due = OutboundMessage.objects.filter(
        email__mailbox_id=mailbox_id, status=OutboundStatus.SENT, sent_copy_status=SentCopyStatus.PENDING
    ).filter(Q(sent_copy_next_attempt_at__isnull=True) | Q(sent_copy_next_attempt_at__lte=timezone.now()))
    if sent_before is not None:
        due = due.filter(Q(sent_at__lt=sent_before) | Q(sent_copy_next_attempt_at__isnull=False))
    return list(due.order_by("pk").values_list("pk", flat=True)[:200])
