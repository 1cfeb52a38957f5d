"""The chain that follows a poll: new emails go on to processing, then auto-responses.

`run_inline=True` (the `poll_mailboxes` command) runs the whole chain in this process, no broker
needed; otherwise each step is enqueued as a Celery task. Either way the same services run, and
the database states (email processing status, auto-reply status) make every step idempotent, so
the next poll also finishes what a crash interrupted.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from autoresponse.models import AutoReplyStatus
from autoresponse.services import auto_replies_due, auto_reply_send
from processing.services import email_process, emails_needing_processing

from .services import PollResult, mailbox_poll


def mailbox_poll_and_process(*, mailbox_id: int, run_inline: bool) -> PollResult:
    result = mailbox_poll(mailbox_id=mailbox_id)
    if result.skipped_reason and not result.new_email_ids:
        return result  # another worker holds this mailbox and does the rest
    # Also after losing the lease mid-poll: the batches committed before that are ours to hand
    # on, the poller that took over sees them as already stored.
    if run_inline:
        _process_inline(mailbox_id, result)
    else:
        _enqueue(mailbox_id, result)
    return result


def _process_inline(mailbox_id: int, result: PollResult) -> None:
    for email_id in emails_needing_processing(mailbox_id=mailbox_id):
        outcome = email_process(email_id=email_id)
        result.processed_count += 1
        result.processing_failures += outcome.result == "failed"
    for auto_reply_id in auto_replies_due(mailbox_id=mailbox_id):
        if auto_reply_send(auto_reply_id=auto_reply_id).status == AutoReplyStatus.SENT:
            result.auto_replies_sent += 1


def _enqueue(mailbox_id: int, result: PollResult) -> None:
    from autoresponse.tasks import send_auto_reply
    from processing.tasks import process_email

    # Work younger than MAILHUB_REQUEUE_PENDING_AFTER is most likely still in the queue; older
    # pending work lost its task (killed worker, restarted broker) and is enqueued again. Running
    # it twice is harmless: every step claims its row before acting.
    stale_before = timezone.now() - timedelta(seconds=settings.MAILHUB_REQUEUE_PENDING_AFTER)
    new_ids = set(result.new_email_ids)
    new_ids.update(emails_needing_processing(mailbox_id=mailbox_id, stored_before=stale_before))
    for email_id in sorted(new_ids):
        process_email.delay(email_id)
    for auto_reply_id in auto_replies_due(mailbox_id=mailbox_id, created_before=stale_before):
        send_auto_reply.delay(auto_reply_id)
