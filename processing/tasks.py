"""Celery tasks of the processing app: thin, explicit names, ids in, one service call."""

from celery import shared_task

from autoresponse.tasks import send_auto_reply

from .services import email_process


@shared_task(name="processing.process_email", ignore_result=True)
def process_email(email_id: int) -> None:
    # Failures are recorded on the email and retried by the next poll (bounded attempts), so the
    # task itself never retries: a poison email can't loop in the queue.
    outcome = email_process(email_id=email_id)
    for auto_reply_id in outcome.auto_reply_ids:
        send_auto_reply.delay(auto_reply_id)
