"""Read-only queries of the autoresponse app."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db.models import Q
from django.utils import timezone

from .models import AutoReply, AutoReplyStatus


def auto_replies_cases_by_message_id(*, mailbox_id: int, message_ids: list[str]) -> Iterable[tuple[str, int]]:
    """(Message-ID, case id) of the auto-replies we sent for emails of a case: a customer who
    answers our auto-reply threads into the case even when the original email is not referenced."""
    return (
        AutoReply.objects.filter(
            email__mailbox_id=mailbox_id, message_id__in=message_ids, email__case__isnull=False
        )
        .values_list("message_id", "email__case_id")
        .distinct()
    )


def auto_replies_due(*, mailbox_id: int, created_before: datetime | None = None) -> list[int]:
    """Pending auto-replies whose (re)try time has come: a lost task or a crash is caught up by
    the next poll (`created_before` keeps out those whose task is probably still queued)."""
    due = AutoReply.objects.filter(email__mailbox_id=mailbox_id, status=AutoReplyStatus.PENDING).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=timezone.now())
    )
    if created_before is not None:
        due = due.filter(created_at__lt=created_before)
    return list(due.order_by("pk").values_list("pk", flat=True))
