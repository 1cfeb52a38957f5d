"""Cases created from emails, emails joining them, and staff changing them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from mailboxes import limits
from mailboxes.models import Email
from processing.models import FIRST_CASE_NUMBER, Case, CaseEvent, CaseStatus

if TYPE_CHECKING:
    from django.contrib.auth.models import User  # settings.AUTH_USER_MODEL

# Concurrent creators that keep colliding give up after this many numbers.
_NUMBER_ATTEMPTS = 20


def case_number_allocate(*, case: Case) -> Case:
    """Insert the unsaved `case` with the next case number (highest + 1, the first is
    FIRST_CASE_NUMBER) and return it.

    The unique constraint on the number is what allocates: two concurrent creators may pick the
    same number, the database refuses the second, which takes the next one. Each try runs in a
    savepoint so that the caller's transaction stays usable; an IntegrityError that is not a
    number collision (e.g. a second case from the same email) is raised as it is.
    """
    for _attempt in range(_NUMBER_ATTEMPTS):
        highest = Case.objects.aggregate(highest=Max("number"))["highest"]
        case.number = (highest or FIRST_CASE_NUMBER - 1) + 1
        try:
            with transaction.atomic():
                case.save(force_insert=True)
            return case
        except IntegrityError:
            if not Case.objects.filter(number=case.number).exists():
                raise
    raise IntegrityError(f"could not allocate a case number after {_NUMBER_ATTEMPTS} attempts")


def case_create_from_email(*, email: Email, previous_case: Case | None = None) -> Case:
    mailbox = email.mailbox
    case = Case(
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
    limits.fit_row(case)  # e.g. a mailbox default status longer than the column
    return case_number_allocate(case=case)


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


def _username(user: User | None) -> str:
    return user.get_username() if user is not None else ""


def case_update(
    *, case_id: int, user: User, status: str, priority: str, assignee: User | None
) -> list[CaseEvent]:
    """Change a case's status, priority and assignee, recording one CaseEvent per changed field.

    The old values are read from the row locked in this transaction, not from the page the user
    saw: two people saving at once both get an exact trail. `resolved_at` is set when the case
    becomes resolved and cleared when it is reopened (open or in progress again).
    """
    with transaction.atomic():
        case = Case.objects.select_for_update().get(pk=case_id)
        now = timezone.now()
        changes = []
        if case.status != status:
            changes.append(("status", case.status, status))
            if status == CaseStatus.RESOLVED:
                case.resolved_at = now
            elif status in (CaseStatus.OPEN, CaseStatus.IN_PROGRESS):
                case.resolved_at = None
            case.status = status
        if case.priority != priority:
            changes.append(("priority", case.priority, priority))
            case.priority = priority
        if case.assignee_id != (assignee.pk if assignee else None):
            changes.append(("assignee", _username(case.assignee), _username(assignee)))
            case.assignee = assignee
        if not changes:
            return []
        case.save(update_fields=["status", "priority", "assignee", "resolved_at", "updated_at"])
        return CaseEvent.objects.bulk_create(
            [
                CaseEvent(
                    case=case,
                    user=user,
                    username=_username(user),
                    field=field,
                    old_value=old,
                    new_value=new,
                    created_at=now,
                )
                for field, old, new in changes
            ]
        )
