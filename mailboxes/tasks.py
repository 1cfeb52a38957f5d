"""Celery tasks of the mailboxes app: thin wrappers around services, explicit stable names."""

from celery import shared_task

from .pipeline import mailbox_poll_and_process
from .services import mailboxes_claim_due_polls


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
    mailbox_poll_and_process(mailbox_id=mailbox_id, run_inline=False)
