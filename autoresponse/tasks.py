"""Celery tasks of the autoresponse app."""

from celery import shared_task

from .models import AutoReplyStatus
from .services import MAX_SEND_ATTEMPTS, auto_reply_send


@shared_task(
    name="autoresponse.send_auto_reply", bind=True, ignore_result=True, max_retries=MAX_SEND_ATTEMPTS
)
def send_auto_reply(self, auto_reply_id: int) -> None:
    reply = auto_reply_send(auto_reply_id=auto_reply_id)
    if reply.status == AutoReplyStatus.PENDING and reply.next_attempt_at:
        # Transient SMTP failure: come back when the backoff says (bounded by max_retries; the
        # next poll also picks up due replies if this task is lost).
        raise self.retry(eta=reply.next_attempt_at)
