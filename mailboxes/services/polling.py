"""Poll one mailbox: lease, incremental UID sync, batches bounded by bytes, error bookkeeping."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from mailboxes.backoff import backoff_delay
from mailboxes.encryption import SecretDecryptionError
from mailboxes.imap import (
    FetchedMessage,
    FolderStatus,
    ImapConnection,
    ImapError,
    ImapSettings,
    imap_session,
    plan_fetch_batches,
)
from mailboxes.models import Email, HistoryImport, Mailbox

from .oauth import mailbox_run_imap
from .storing import email_prepare_fetched, email_store_fetched

logger = logging.getLogger("mailhub.poll")


@dataclass
class PollResult:
    mailbox_id: int
    label: str
    new_email_ids: list[int] = field(default_factory=list)
    history_count: int = 0
    duplicate_count: int = 0
    undelivered_count: int = 0  # placeholders for messages the server never delivered
    skipped_reason: str = ""
    error: str = ""
    error_is_permanent: bool = False
    duration: float = 0.0
    # Filled by the pipeline when it runs processing in this process (poll_mailboxes).
    processed_count: int = 0
    processing_failures: int = 0
    auto_replies_sent: int = 0

    @property
    def summary(self) -> str:
        if self.skipped_reason:
            return f"{self.label}: skipped ({self.skipped_reason})"
        text = (
            f"{self.label}: {len(self.new_email_ids)} new, {self.history_count} history, "
            f"{self.duplicate_count} duplicate(s), {self.processed_count} processed "
            f"({self.processing_failures} failed), {self.auto_replies_sent} auto-repl(y/ies) sent "
            f"in {self.duration:.1f}s"
        )
        if self.error:
            text += f"; error: {self.error}"
        return text


class LeaseLost(Exception):
    """Another worker took over this mailbox (our lease expired): stop without writing more."""


def mailbox_acquire_poll_lease(*, mailbox_id: int, seconds: int) -> str | None:
    """Claim the mailbox for one poll with a conditional UPDATE (safe on SQLite and PostgreSQL).

    Returns the lease token, or None when another live poll holds it. A worker that dies leaves
    a lease that simply expires.
    """
    now = timezone.now()
    token = secrets.token_hex(16)
    claimed = (
        Mailbox.objects.filter(pk=mailbox_id)
        .filter(Q(poll_lease_expires_at__isnull=True) | Q(poll_lease_expires_at__lt=now))
        .update(poll_lease_token=token, poll_lease_expires_at=now + timedelta(seconds=seconds))
    )
    return token if claimed == 1 else None


def mailbox_renew_poll_lease(*, mailbox_id: int, token: str, seconds: int) -> None:
    renewed = Mailbox.objects.filter(pk=mailbox_id, poll_lease_token=token).update(
        poll_lease_expires_at=timezone.now() + timedelta(seconds=seconds)
    )
    if renewed != 1:
        raise LeaseLost(f"poll lease of mailbox {mailbox_id} was taken over")


def mailbox_release_poll_lease(*, mailbox_id: int, token: str) -> None:
    Mailbox.objects.filter(pk=mailbox_id, poll_lease_token=token).update(
        poll_lease_token="", poll_lease_expires_at=None
    )


def retry_delay(*, poll_interval: int, failures: int) -> timedelta:
    """Exponential backoff with jitter, capped: a broken mailbox is not hammered (nor forgotten)."""
    return backoff_delay(
        attempt=failures,
        first=max(poll_interval, 30),
        cap=settings.MAILHUB_POLL_BACKOFF_MAX,
        max_exponent=10,
        jitter=0.2,
    )


def mailbox_poll(*, mailbox_id: int) -> PollResult:
    """Fetch and store every message above the stored UID cursor of one mailbox.

    Returns the ids of the new (non-history) emails, which the caller hands to processing.
    """
    started = time.monotonic()
    mailbox = Mailbox.objects.get(pk=mailbox_id)
    result = PollResult(mailbox_id=mailbox.pk, label=mailbox.label)
    lease_seconds = settings.MAILHUB_POLL_LEASE_SECONDS
    token = mailbox_acquire_poll_lease(mailbox_id=mailbox.pk, seconds=lease_seconds)
    if token is None:
        result.skipped_reason = "another poll of this mailbox is running"
        return result
    try:
        mailbox.refresh_from_db()  # the cursor as the previous poll left it
        # The password or an OAuth2 token (one retry with a fresh token if it is refused: the
        # login comes before anything is stored, so running the sync again is safe).
        mailbox_run_imap(mailbox=mailbox, run=lambda imap: _sync(mailbox, token, result, imap))
    except ImapError as exc:
        result.error, result.error_is_permanent = str(exc), exc.permanent
    except SecretDecryptionError as exc:
        # The key of the stored password is gone: only an admin entering it again can help, and
        # only this mailbox is affected. Recorded like a permanent IMAP error (with backoff).
        result.error, result.error_is_permanent = str(exc), True
    except LeaseLost as exc:
        result.skipped_reason = str(exc)
    except Exception as exc:
        # Our side failed (disk full, database down, a bug), not the mail server nor a message:
        # the batch rolled back with its cursor, so the next poll fetches it again. Recorded
        # apart from transport errors, and never mistaken for a successful poll.
        logger.exception("poll of mailbox %s failed on our side", mailbox.pk)
        result.error = f"internal error while storing: {type(exc).__name__}: {exc}"
    finally:
        result.duration = time.monotonic() - started
        _record_outcome(mailbox, result)
        mailbox_release_poll_lease(mailbox_id=mailbox.pk, token=token)
    # The same values as fields (LOG_FORMAT=json) and as a sentence for whoever reads the text.
    logger.info(
        "poll mailbox=%s label=%r new=%d history=%d duplicates=%d duration=%.2fs error=%r",
        mailbox.pk,
        mailbox.label,
        len(result.new_email_ids),
        result.history_count,
        result.duplicate_count,
        result.duration,
        result.error,
        extra={
            "mailbox_id": mailbox.pk,
            "mailbox": mailbox.label,
            "new": len(result.new_email_ids),
            "history": result.history_count,
            "duplicates": result.duplicate_count,
            "duration_ms": round(result.duration * 1000),
            "error": result.error,
        },
    )
    return result


def _sync(mailbox: Mailbox, token: str, result: PollResult, imap: ImapSettings) -> None:
    """The cursor (imap_last_uid) only ever passes a UID that is stored, confirmed expunged, or
    deliberately skipped history: a UID the server lists but does not deliver holds it (for a
    bounded number of polls, see _undelivered_to_store)."""
    refused: dict[int, int] = {}  # listed but not delivered, cursor waits before them -> polls
    with imap_session(imap) as connection:
        status = connection.select_folder()
        _reset_cursor_if_needed(connection, mailbox, status)
        listed = connection.sizes_after(mailbox.imap_last_uid)
        stored = _stored_above_cursor(mailbox, status.uidvalidity)
        pending = {uid: size for uid, size in listed.items() if uid not in stored}
        wanted = _drop_unwanted_history(connection, mailbox, pending)
        batches = plan_fetch_batches(
            wanted,
            max_bytes=settings.MAILHUB_FETCH_BATCH_BYTES,
            max_count=settings.MAILHUB_FETCH_BATCH_MESSAGES,
        )
        earlier = {int(uid): int(polls) for uid, polls in mailbox.imap_undelivered_polls.items()}
        for batch in batches:
            mailbox_renew_poll_lease(
                mailbox_id=mailbox.pk, token=token, seconds=settings.MAILHUB_POLL_LEASE_SECONDS
            )
            fetched = connection.fetch_messages(batch)
            placeholders = _undelivered_to_store(mailbox, fetched.undelivered, earlier, refused)
            messages = sorted([*fetched.messages, *placeholders], key=lambda message: message.uid)
            # Up to the batch's end (UIDs confirmed gone included), unless a UID the server
            # would not deliver holds the cursor before it: later ones are stored all the same
            # and recognised as stored by the next poll (_stored_above_cursor).
            cursor = min(refused) - 1 if refused else max(batch)
            _store_batch(mailbox, token, status.uidvalidity, messages, result, cursor=cursor)
        if listed and not refused:
            # Skipped history older than 'since' and UIDs stored by an earlier poll: step over.
            Mailbox.objects.filter(pk=mailbox.pk, imap_last_uid__lt=max(listed)).update(
                imap_last_uid=max(listed)
            )
    if refused != earlier:
        Mailbox.objects.filter(pk=mailbox.pk, poll_lease_token=token).update(
            imap_undelivered_polls={str(uid): polls for uid, polls in refused.items()}
        )
    if refused:
        uids = ", ".join(str(uid) for uid in sorted(refused))
        raise ImapError(
            f"IMAP server lists UID(s) {uids} but did not deliver them (FETCH without the message, "
            f"also alone); the cursor waits before UID {min(refused)}, for at most "
            f"{settings.MAILHUB_UNDELIVERED_MAX_POLLS} polls each",
            permanent=False,
        )


def _stored_above_cursor(mailbox: Mailbox, uidvalidity: int) -> set[int]:
    """UIDs above the cursor stored already: an earlier poll stored them while the cursor waited
    before a UID the server did not deliver. Usually none (one range scan of the unique index)."""
    stored = Email.objects.filter(mailbox=mailbox, uidvalidity=uidvalidity, uid__gt=mailbox.imap_last_uid)
    return {uid for uid in stored.values_list("uid", flat=True) if uid is not None}


def _undelivered_to_store(
    mailbox: Mailbox, undelivered: list[int], earlier: dict[int, int], refused: dict[int, int]
) -> list[FetchedMessage]:
    """The bounded rule for UIDs that UID SEARCH lists but FETCH never delivers.

    Each such UID holds the cursor for MAILHUB_UNDELIVERED_MAX_POLLS polls (a transient error
    each time: the server may deliver it later); at the last one a placeholder email is stored
    instead, so that the gap is visible and the mailbox never sticks. `refused` collects those
    that still hold the cursor.
    """
    placeholders = []
    for uid in undelivered:
        polls = earlier.get(uid, 0) + 1
        if polls >= settings.MAILHUB_UNDELIVERED_MAX_POLLS:
            logger.warning(
                "mailbox %s: UID %s listed but not delivered in %d polls: stored as a placeholder",
                mailbox.pk,
                uid,
                polls,
            )
            placeholders.append(FetchedMessage(uid=uid, raw=b"", internal_date=None, undelivered=True))
        else:
            refused[uid] = polls
    return placeholders


def _reset_cursor_if_needed(connection: ImapConnection, mailbox: Mailbox, status: FolderStatus) -> None:
    """First contact, or UIDVALIDITY changed (RFC 3501 §2.3.1.1: all old UIDs are void)."""
    if mailbox.imap_uidvalidity == status.uidvalidity:
        return
    first_contact = mailbox.imap_uidvalidity is None
    # RFC 3501 §6.3.1 makes UIDNEXT REQUIRED in the SELECT answer, but servers omit it: the
    # highest UID there is stands in, never 0 (that would turn the folder's existing mail into
    # new mail, processed and auto-answered).
    history_last_uid = connection.highest_uid() if status.uidnext is None else max(status.uidnext - 1, 0)
    # 'none' skips what is already there; otherwise (re-)sync from the start: what was stored
    # before a UIDVALIDITY change is recognised by its identity.
    skip_existing = first_contact and mailbox.history_import == HistoryImport.NONE
    last_uid = history_last_uid if skip_existing else 0
    Mailbox.objects.filter(pk=mailbox.pk).update(
        imap_uidvalidity=status.uidvalidity,
        imap_last_uid=last_uid,
        imap_history_last_uid=history_last_uid,
        imap_undelivered_polls={},
    )
    mailbox.imap_uidvalidity = status.uidvalidity
    mailbox.imap_last_uid = last_uid
    mailbox.imap_history_last_uid = history_last_uid
    mailbox.imap_undelivered_polls = {}
    if not first_contact:
        logger.warning(
            "mailbox %s: UIDVALIDITY changed to %s, re-syncing the folder", mailbox.pk, status.uidvalidity
        )


def _drop_unwanted_history(
    connection: ImapConnection, mailbox: Mailbox, sizes: dict[int, int | None]
) -> dict[int, int | None]:
    """With 'since a date', history older than the date is not fetched at all."""
    if mailbox.history_import != HistoryImport.SINCE or not mailbox.history_since:
        return sizes
    history = [uid for uid in sizes if uid <= mailbox.imap_history_last_uid]
    if not history:
        return sizes
    recent = connection.search_since(mailbox.history_since)
    return {uid: size for uid, size in sizes.items() if uid > mailbox.imap_history_last_uid or uid in recent}


def _store_batch(
    mailbox: Mailbox,
    token: str,
    uidvalidity: int,
    messages: list[FetchedMessage],
    result: PollResult,
    *,
    cursor: int,
) -> None:
    """Parse the batch, then store it in one short transaction: its emails and the advanced
    cursor commit together, and only while the lease is still ours (the conditional UPDATE also
    locks the mailbox row until the commit, so a poller taking over waits for this batch rather
    than racing it).

    Parsing and writing the files come first, outside the transaction: they are most of the
    work, and inside the transaction they held SQLite's single write lock (BEGIN IMMEDIATE:
    every other writer of the installation waits, a second worker included) or PostgreSQL's
    lock on the mailbox row for the whole batch.

    `cursor` is the caller's: the highest UID below which every UID is stored or known gone."""
    new_ids, history, duplicates, placeholders = [], 0, 0, 0
    written: list[str] = []
    try:
        prepared = [
            email_prepare_fetched(
                mailbox_id=mailbox.pk,
                uidvalidity=uidvalidity,
                uid=message.uid,
                raw=message.raw,
                undelivered=message.undelivered,
                written_files=written,
            )
            for message in messages
        ]
        with transaction.atomic():
            mailbox_renew_poll_lease(
                mailbox_id=mailbox.pk, token=token, seconds=settings.MAILHUB_POLL_LEASE_SECONDS
            )
            for message, ready in zip(messages, prepared, strict=True):
                outcome = email_store_fetched(
                    mailbox=mailbox,
                    uidvalidity=uidvalidity,
                    uid=message.uid,
                    raw=message.raw,
                    internal_date=message.internal_date,
                    is_history=message.uid <= mailbox.imap_history_last_uid,
                    written_files=written,
                    undelivered=message.undelivered,
                    prepared=ready,
                )
                if outcome.email is None:
                    duplicates += 1
                elif message.undelivered:
                    placeholders += 1  # nothing to process: the gap is only made visible
                elif outcome.email.is_history:
                    history += 1
                else:
                    new_ids.append(outcome.email.pk)
            Mailbox.objects.filter(pk=mailbox.pk, imap_last_uid__lt=cursor).update(imap_last_uid=cursor)
    except BaseException:
        # The rows are gone with the rollback (or were never written); their files must not
        # stay behind as orphans.
        for name in written:
            default_storage.delete(name)
        raise
    # Counted only once committed: a batch that rolled back stored nothing.
    result.new_email_ids += new_ids
    result.history_count += history
    result.duplicate_count += duplicates
    result.undelivered_count += placeholders
    mailbox.imap_last_uid = max(mailbox.imap_last_uid, cursor)


def _record_outcome(mailbox: Mailbox, result: PollResult) -> None:
    if result.skipped_reason and not result.error:
        return
    now = timezone.now()
    if result.error:
        failures = mailbox.consecutive_failures + 1
        Mailbox.objects.filter(pk=mailbox.pk).update(
            last_polled_at=now,
            last_error=result.error,
            consecutive_failures=F("consecutive_failures") + 1,
            next_poll_at=now + retry_delay(poll_interval=mailbox.poll_interval, failures=failures),
        )
    else:
        Mailbox.objects.filter(pk=mailbox.pk).update(
            last_polled_at=now,
            last_success_at=now,
            last_error="",
            consecutive_failures=0,
            next_poll_at=now + timedelta(seconds=mailbox.poll_interval),
        )


def mailboxes_claim_due_polls(*, now: datetime | None = None) -> list[int]:
    """Ids of active mailboxes whose poll is due, each claimed once (even with several beats)."""
    now = now or timezone.now()
    due = Mailbox.objects.active().filter(Q(next_poll_at__isnull=True) | Q(next_poll_at__lte=now))
    # While IDLE pushes this mailbox's arrivals (its lease unexpired and its connection idling,
    # mailhub/idle.py), polling is only the safety net: at most every
    # MAILHUB_IDLE_SAFETY_POLL_SECONDS. A dead supervisor's lease expires, and polling is back.
    idle_covers = Q(
        idle_live=True,
        idle_lease_expires_at__gt=now,
        last_polled_at__gt=now - timedelta(seconds=settings.MAILHUB_IDLE_SAFETY_POLL_SECONDS),
    )
    due = due.exclude(idle_covers)
    claimed = []
    for mailbox_id, next_poll_at, interval in due.values_list("pk", "next_poll_at", "poll_interval"):
        # Push next_poll_at ahead at once so the poll is not enqueued again while it waits in the
        # queue; the poll itself sets the real next time when it ends.
        won = Mailbox.objects.filter(pk=mailbox_id, next_poll_at=next_poll_at).update(
            next_poll_at=now + timedelta(seconds=max(interval, 1))
        )
        if won:
            claimed.append(mailbox_id)
    return claimed
