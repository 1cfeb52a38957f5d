"""Cases created from emails, emails joining them, and staff changing them."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from mailboxes import limits
from mailboxes.models import Email, EmailDirection
from processing.models import (
    FIRST_CASE_NUMBER,
    FIRST_RESPONSE_FIELD,
    Case,
    CaseEvent,
    CasePriority,
    CaseStatus,
)

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
    """A customer's email joins its case.

    A closed case stays closed: the email opens a follow-up case linked to it. A case waiting
    for the customer opens again (their answer is what it waited for); a resolved one too if
    the mailbox says so. Reopening is a status change made by mailhub, recorded in the case's
    history like a person's (user None, shown as "mailhub").
    """
    if case.status == CaseStatus.CLOSED:
        return case_create_from_email(email=email, previous_case=case)
    now = timezone.now()
    if case.status == CaseStatus.WAITING or (
        case.status == CaseStatus.RESOLVED and email.mailbox.reopen_resolved_cases
    ):
        old_status = case.status
        # Conditional on the status this decision was made from: if staff changed it meanwhile,
        # their change stands and no event claims a change that did not happen.
        reopened = Case.objects.filter(pk=case.pk, status=old_status).update(
            status=CaseStatus.OPEN, resolved_at=None, updated_at=now
        )
        if reopened:
            case.status, case.resolved_at, case.updated_at = CaseStatus.OPEN, None, now
            CaseEvent.objects.create(
                case=case,
                user=None,
                username="",
                field="status",
                old_value=old_status,
                new_value=CaseStatus.OPEN,
                created_at=now,
            )
            return case
    # Only the time: writing back the status read earlier would undo a concurrent change.
    Case.objects.filter(pk=case.pk).update(updated_at=now)
    case.updated_at = now
    return case


def case_first_response_record(*, email_id: int, at: datetime) -> bool:
    """Record that the outgoing email `email_id`, accepted by the SMTP server at `at`, answered
    its case: the first such answer sets the case's `first_response_at` and adds a
    "first_response" event (by the email's sender). True when this was the first.

    Exactly once from the database: the UPDATE is conditional on `first_response_at` being
    still NULL, so of two answers recorded at once (two workers, a retried task) only the one
    whose UPDATE changed the row records the event; the other sees the value set and changes
    nothing. An incoming email, or an email on no case, records nothing.
    """
    email = (
        Email.objects.filter(pk=email_id, direction=EmailDirection.OUTGOING, case__isnull=False)
        .select_related("sent_by")
        .only("pk", "case_id", "sent_by")
        .first()
    )
    if email is None or email.case_id is None:
        return False
    with transaction.atomic():
        first = Case.objects.filter(pk=email.case_id, first_response_at__isnull=True).update(
            first_response_at=at
        )
        if not first:
            return False
        CaseEvent.objects.create(
            case_id=email.case_id,
            user=email.sent_by,
            username=_username(email.sent_by),
            field=FIRST_RESPONSE_FIELD,
            old_value="",
            new_value=at.isoformat(),
            created_at=at,
        )
    return True


def _username(user: User | None) -> str:
    return user.get_username() if user is not None else ""


def case_update(
    *, case_id: int, user: User, status: str, priority: str, assignee: User | None
) -> list[CaseEvent]:
    """Change a case's status, priority and assignee, recording one CaseEvent per changed field.

    The old values are read from the row locked in this transaction, not from the page the user
    saw: two people saving at once both get an exact trail. `resolved_at` is set when the case
    becomes resolved and cleared when it is reopened (open, in progress or waiting for the
    customer again); closing keeps it.
    """
    if status not in CaseStatus.values or priority not in CasePriority.values:
        raise ValueError(f"unknown status {status!r} or priority {priority!r}")
    with transaction.atomic():
        case = Case.objects.select_for_update().get(pk=case_id)
        now = timezone.now()
        changes = []
        if case.status != status:
            changes.append(("status", case.status, status))
            if status == CaseStatus.RESOLVED:
                case.resolved_at = now
            elif status in (CaseStatus.OPEN, CaseStatus.IN_PROGRESS, CaseStatus.WAITING):
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
