"""Read-only queries of the autoresponse app."""

from __future__ import annotations

from collections.abc import Iterable

from .models import AutoReply


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
