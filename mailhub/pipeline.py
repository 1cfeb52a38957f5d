"""The pipeline: poll -> process each new email -> send each auto-reply it decided; and staff's
answers: send -> record the case's first response -> copy to the Sent folder.

One description of the steps, run two ways. `InlineDispatch` (the `poll_mailboxes` command, no
broker) runs every step in this process; `QueuedDispatch` (mailhub/tasks.py, the worker) enqueues
each step as its Celery task, whose body is the same step function. Either way the same
services run, and the database states (email processing status, auto-reply status) make every
step idempotent, so the next poll also finishes what a crash or a lost task interrupted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from autoresponse.models import AutoReplyStatus
from autoresponse.selectors import auto_replies_due
from autoresponse.services import auto_replies_mark_stale_sending, auto_reply_send
from mailboxes.models import OutboundStatus, SentCopyStatus
from mailboxes.services import PollResult, mailbox_poll
from mailboxes.services.sending import (
    outbound_copies_due,
    outbound_copies_reset_stale,
    outbound_copy_to_sent,
    outbound_send,
    outbounds_due,
    outbounds_mark_stale_sending,
)
from processing.services import (
    ProcessingOutcome,
    ProcessingResult,
    email_process,
    emails_needing_processing,
    emails_process_batch,
)
from processing.services.cases import case_first_response_record

# Emails processed in one transaction (one task on the queue).
PROCESSING_BATCH_SIZE = 100


class Dispatch(Protocol):
    """How the steps after the poll run: here and now, or as queued tasks."""

    def process(self, email_id: int) -> None: ...

    def process_batch(self, mailbox_id: int, email_ids: list[int]) -> None: ...

    def send(self, auto_reply_id: int) -> None: ...

    def send_outbound(self, outbound_id: int) -> None: ...

    def copy_to_sent(self, outbound_id: int) -> None: ...

    def stale_before(self) -> datetime | None:
        """Work older than this lost its task and is dispatched again (None: all of it)."""
        ...


def mailbox_poll_step(*, mailbox_id: int, dispatch: Dispatch) -> PollResult:
    """Poll one mailbox, then hand its new emails (and any work a crash left) to the next step."""
    result = mailbox_poll(mailbox_id=mailbox_id)
    if result.skipped_reason and not result.new_email_ids:
        return result  # another worker holds this mailbox and does the rest
    # Also after losing the lease mid-poll: the batches committed before that are ours to hand
    # on, the poller that took over sees them as already stored.
    stale_before = dispatch.stale_before()
    email_ids = set(result.new_email_ids)
    email_ids.update(emails_needing_processing(mailbox_id=mailbox_id, stored_before=stale_before))
    ordered = sorted(email_ids)
    for start in range(0, len(ordered), PROCESSING_BATCH_SIZE):
        dispatch.process_batch(mailbox_id, ordered[start : start + PROCESSING_BATCH_SIZE])
    # Before reading what is due: an interrupted send becomes 'uncertain', never due again.
    auto_replies_mark_stale_sending(mailbox_id=mailbox_id)
    for auto_reply_id in auto_replies_due(mailbox_id=mailbox_id, created_before=stale_before):
        dispatch.send(auto_reply_id)
    # Staff's answers whose send task was lost, or whose backoff after a transient error is over.
    outbounds_mark_stale_sending(mailbox_id=mailbox_id)
    for outbound_id in outbounds_due(mailbox_id=mailbox_id, created_before=stale_before):
        dispatch.send_outbound(outbound_id)
    # Sent-folder copies whose task was lost, whose backoff is over, or whose worker died while
    # appending (back to pending first: the folder is searched before every APPEND).
    outbound_copies_reset_stale(mailbox_id=mailbox_id)
    for outbound_id in outbound_copies_due(mailbox_id=mailbox_id, sent_before=stale_before):
        dispatch.copy_to_sent(outbound_id)
    return result


def email_process_step(*, email_id: int, dispatch: Dispatch) -> ProcessingResult:
    """Process one email; the auto-replies it decided go on to sending."""
    outcome = email_process(email_id=email_id)
    for auto_reply_id in outcome.auto_reply_ids:
        dispatch.send(auto_reply_id)
    return outcome.result


def emails_process_batch_step(
    *, mailbox_id: int, email_ids: list[int], dispatch: Dispatch
) -> list[ProcessingOutcome]:
    """Process a batch of one mailbox's emails in one transaction; the auto-replies they decided
    go on to sending once it has committed."""
    outcomes = emails_process_batch(mailbox_id=mailbox_id, email_ids=email_ids)
    for outcome in outcomes:
        for auto_reply_id in outcome.auto_reply_ids:
            dispatch.send(auto_reply_id)
    return outcomes


def auto_reply_send_step(*, auto_reply_id: int) -> AutoReplyStatus:
    return AutoReplyStatus(auto_reply_send(auto_reply_id=auto_reply_id).status)


def outbound_send_step(*, outbound_id: int, dispatch: Dispatch) -> OutboundStatus:
    """Send one answer of staff (at most once); once sent, its copy goes to the Sent folder."""
    outbound = outbound_send(outbound_id=outbound_id)
    status = OutboundStatus(outbound.status)
    if status == OutboundStatus.SENT and outbound.sent_at is not None:
        # Idempotent (only while the case has none), so a task delivered twice records it once.
        case_first_response_record(email_id=outbound.email_id, at=outbound.sent_at)
        dispatch.copy_to_sent(outbound_id)
    return status


def outbound_copy_to_sent_step(*, outbound_id: int) -> SentCopyStatus:
    """Append a sent answer to its mailbox's Sent folder (at most one copy there)."""
    return SentCopyStatus(outbound_copy_to_sent(outbound_id=outbound_id).sent_copy_status)


class InlineDispatch:
    """Every step in this process, counted into the poll's result (the `poll_mailboxes` line)."""

    def __init__(self, result_counts: InlineCounts) -> None:
        self.counts = result_counts

    def process(self, email_id: int) -> None:
        result = email_process_step(email_id=email_id, dispatch=self)
        self.counts.processed += 1
        self.counts.failed += result == ProcessingResult.FAILED

    def process_batch(self, mailbox_id: int, email_ids: list[int]) -> None:
        outcomes = emails_process_batch_step(mailbox_id=mailbox_id, email_ids=email_ids, dispatch=self)
        self.counts.processed += len(outcomes)
        self.counts.failed += sum(outcome.result == ProcessingResult.FAILED for outcome in outcomes)

    def send(self, auto_reply_id: int) -> None:
        if auto_reply_send_step(auto_reply_id=auto_reply_id) == AutoReplyStatus.SENT:
            self.counts.auto_replies_sent += 1

    def send_outbound(self, outbound_id: int) -> None:
        outbound_send_step(outbound_id=outbound_id, dispatch=self)

    def copy_to_sent(self, outbound_id: int) -> None:
        outbound_copy_to_sent_step(outbound_id=outbound_id)

    def stale_before(self) -> datetime | None:
        return None  # nothing is queued: everything unfinished is ours now


@dataclass
class InlineCounts:
    processed: int = 0
    failed: int = 0
    auto_replies_sent: int = 0


def mailbox_poll_inline(*, mailbox_id: int) -> PollResult:
    """Poll one mailbox and run every following step here (the `poll_mailboxes` command)."""
    counts = InlineCounts()
    result = mailbox_poll_step(mailbox_id=mailbox_id, dispatch=InlineDispatch(counts))
    result.processed_count += counts.processed
    result.processing_failures += counts.failed
    result.auto_replies_sent += counts.auto_replies_sent
    return result
