"""Cases created from emails, and emails joining them."""

from __future__ import annotations

from django.utils import timezone

from mailboxes.models import Email
from processing.models import Case, CaseStatus


def case_create_from_email(*, email: Email, previous_case: Case | None = None) -> Case:
    mailbox = email.mailbox
    return Case.objects.create(
        subject=email.subject or "(no subject)",
        description=email.text_body,
        status=mailbox.default_case_status or CaseStatus.OPEN,
        priority=mailbox.default_case_priority,
        owner=mailbox.default_owner,
        assignee=mailbox.default_case_assignee,
        reporter_name=email.from_name,
        reporter_address=email.from_address,
        mailbox=mailbox,
        previous_case=previous_case,
        source_email=email,
    )


def case_add_reply(*, case: Case, email: Email) -> Case:
    """A reply joins its case; a resolved case reopens (if the mailbox says so); a closed one stays
    closed and the reply opens a follow-up case linked to it."""
    if case.status == CaseStatus.CLOSED:
        return case_create_from_email(email=email, previous_case=case)
    if case.status == CaseStatus.RESOLVED and email.mailbox.reopen_resolved_cases:
        case.status = CaseStatus.OPEN
        case.resolved_at = None
    case.updated_at = timezone.now()
    case.save(update_fields=["status", "resolved_at", "updated_at"])
    return case
