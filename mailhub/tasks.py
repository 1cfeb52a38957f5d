"""The Celery tasks: thin interfaces over the pipeline's steps, ids in, explicit stable names.

The names are those the tasks had when they lived in their apps (queued messages and the beat
schedule refer to them), so a deployment can be upgraded with work in the queue.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from celery import Task, shared_task
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError

from autoresponse.models import AutoReply, AutoReplyStatus
from autoresponse.services import auto_reply_send
from mailboxes.services import mailboxes_claim_due_polls
from mailboxes.services.sending import MAX_SEND_ATTEMPTS

from .pipeline import (
    email_process_step,
    emails_process_batch_step,
    mailbox_poll_step,
    outbound_copy_to_sent_step,
    outbound_send_step,
)

logger = logging.getLogger("mailhub.tasks")


def enqueue_after_commit(task: Task[[int], None], row_id: int) -> None:
    """Enqueue `task(row_id)` once the current transaction commits (the worker must find the row;
    a rolled-back row is never worked on). The row is stored and pending: if the broker refuses
    the task now, the next poll of its mailbox dispatches it again, so a person acting on a page
    is not shown an error for work that will still be done."""

    def enqueue() -> None:
        try:
            task.delay(row_id)
        except OperationalError:
            logger.warning(
                "%s(%s): the broker refused the task; the next poll dispatches it", task.name, row_id
            )

    transaction.on_commit(enqueue)


class QueuedDispatch:
    """Each step as its Celery task. Work younger than MAILHUB_REQUEUE_PENDING_AFTER is most
    likely still in the queue; older pending work lost its task (killed worker, restarted broker)
    and is enqueued again. Running a step twice is harmless: every step claims its row first."""

    def process(self, email_id: int) -> None:
        process_email.delay(email_id)

    def process_batch(self, mailbox_id: int, email_ids: list[int]) -> None:
        process_emails.delay(mailbox_id, email_ids)

    def send(self, auto_reply_id: int) -> None:
        send_auto_reply.delay(auto_reply_id)

    def send_outbound(self, outbound_id: int) -> None:
        send_outbound.delay(outbound_id)

    def copy_to_sent(self, outbound_id: int) -> None:
        copy_outbound_to_sent.delay(outbound_id)

    def stale_before(self) -> datetime | None:
        return timezone.now() - timedelta(seconds=settings.MAILHUB_REQUEUE_PENDING_AFTER)


@shared_task(name="mailboxes.dispatch_due_polls", ignore_result=True)
def dispatch_due_polls() -> int:
    """Beat runs this every few seconds: enqueue one poll per mailbox whose interval elapsed."""
    mailbox_ids = mailboxes_claim_due_polls()
    for mailbox_id in mailbox_ids:
        poll_mailbox.delay(mailbox_id)
    return len(mailbox_ids)


@shared_task(name="mailboxes.poll_mailbox", ignore_result=True)
def poll_mailbox(mailbox_id: int) -> None:
    # Transport errors are recorded on the mailbox with their own backoff (next_poll_at), so the
    # task itself does not retry: the dispatcher enqueues the next attempt when it is due.
    mailbox_poll_step(mailbox_id=mailbox_id, dispatch=QueuedDispatch())


@shared_task(name="processing.process_email", ignore_result=True)
def process_email(email_id: int) -> None:
    # Failures are recorded on the email and retried by the next poll (bounded attempts), so the
    # task itself never retries: a poison email can't loop in the queue.
    email_process_step(email_id=email_id, dispatch=QueuedDispatch())


@shared_task(name="processing.process_emails", ignore_result=True)
def process_emails(mailbox_id: int, email_ids: list[int]) -> None:
    # One transaction for the batch; failures are recorded per email, as for process_email.
    emails_process_batch_step(mailbox_id=mailbox_id, email_ids=email_ids, dispatch=QueuedDispatch())


@shared_task(
    name="autoresponse.send_auto_reply", bind=True, ignore_result=True, max_retries=MAX_SEND_ATTEMPTS
)
def send_auto_reply(self: Task[[int], None], auto_reply_id: int) -> None:
    reply: AutoReply = auto_reply_send(auto_reply_id=auto_reply_id)
    if reply.status == AutoReplyStatus.PENDING and reply.next_attempt_at:
        # Transient SMTP failure: come back when the backoff says (bounded by max_retries; the
        # next poll also picks up due replies if this task is lost).
        raise self.retry(eta=reply.next_attempt_at)


@shared_task(name="mailhub.send_outbound", ignore_result=True)
def send_outbound(outbound_id: int) -> None:
    # Transient failures leave the row pending with a backoff time; the next poll of its mailbox
    # sends it when that is over (never this task retrying on its own: the claim decides).
    outbound_send_step(outbound_id=outbound_id, dispatch=QueuedDispatch())


@shared_task(name="mailhub.copy_outbound_to_sent", ignore_result=True)
def copy_outbound_to_sent(outbound_id: int) -> None:
    # Like the send: a transient IMAP error leaves the copy pending with a backoff time and the
    # next poll of its mailbox dispatches it again; the claim decides, never a retry of this task.
    outbound_copy_to_sent_step(outbound_id=outbound_id)
