"""Run a mailbox's processing action on a stored email, exactly once.

Exactly once comes from the database: the email row (and its mailbox row, which serialises lead
de-duplication and case numbers) is locked inside one transaction, the email's processing status
is checked and set in it, and one-to-one `source_email` links refuse a second lead or case even if
two processors got past the check.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from autoresponse.services import AutoReplyPlanning, auto_replies_plan_for_email, auto_reply_planning_load
from mailboxes.backoff import backoff_delay
from mailboxes.models import Email, Mailbox, ProcessingAction, ProcessingStatus
from processing.models import Case, CaseStatus, Lead

from .cases import case_add_reply, case_create_from_email
from .leads import lead_create_or_join_from_email
from .threads import case_find_for_reply, referenced_message_ids

logger = logging.getLogger("mailhub.processing")

# After this many failed attempts an email stays 'failed' until someone retries it by hand.
MAX_PROCESSING_ATTEMPTS = 5
# Wait before attempt n+1: 1, 4, 16 and 64 minutes. A database or SMTP outage of an hour does
# not use up an email's attempts the way retrying at every poll would.
RETRY_BASE = timedelta(minutes=1)


def processing_retry_delay(attempts: int) -> timedelta:
    return backoff_delay(attempt=attempts, first=RETRY_BASE.total_seconds(), factor=4)


class ProcessingResult(StrEnum):
    """What processing did with one email."""

    NOTHING = "nothing"
    LEAD_CREATED = "lead_created"
    LEAD_JOINED = "lead_joined"
    CASE_CREATED = "case_created"
    CASE_JOINED = "case_joined"
    CASE_FOLLOW_UP = "case_follow_up"
    ALREADY_DONE = "already_done"
    FAILED = "failed"


@dataclass(frozen=True)
class ProcessingOutcome:
    email_id: int
    result: ProcessingResult
    lead_id: int | None = None
    case_id: int | None = None
    error: str = ""
    auto_reply_ids: tuple[int, ...] = ()


class ConversionRefused(Exception):
    """A manual conversion that contradicts what the email already is (a lead asked to be a case)."""


def _lock(email_id: int) -> tuple[Email, Mailbox]:
    # Always the mailbox row first, then emails: a reply and the email it answers, processed at
    # once, would otherwise each hold one email and wait for the other (a PostgreSQL deadlock).
    mailbox_id = Email.objects.values_list("mailbox_id", flat=True).get(pk=email_id)
    mailbox = Mailbox.objects.select_for_update().get(pk=mailbox_id)
    email = Email.objects.select_for_update().get(pk=email_id)
    email.mailbox = mailbox
    return email, mailbox


def email_process(*, email_id: int) -> ProcessingOutcome:
    """Apply the mailbox's action to one new email. Failures are recorded on the email, not raised.

    One unit of failure per email: the earlier emails a reply answers are processed first, each
    in its own savepoint, and one that fails is recorded as failed on itself; the reply goes on
    (its threading then simply finds no case there). The reply's own work is a savepoint too, so
    the failures recorded on those earlier emails are committed even when the reply fails.
    """
    try:
        with transaction.atomic():
            email, mailbox = _lock(email_id)
            if email.processing_status not in (ProcessingStatus.PENDING, ProcessingStatus.FAILED):
                return ProcessingOutcome(
                    email_id, ProcessingResult.ALREADY_DONE, email.lead_id, email.case_id
                )
            # Workers may take a reply before the email it answers: process that one first (the
            # mailbox lock is held), so the reply finds its case.
            earlier_ids: list[int] = []
            for earlier in _unprocessed_emails_it_answers(email):
                earlier.mailbox = mailbox
                earlier_ids += _process_in_savepoint(earlier, mailbox).auto_reply_ids
            outcome = _process_in_savepoint(email, mailbox)
        return replace(outcome, auto_reply_ids=tuple(earlier_ids) + outcome.auto_reply_ids)
    except Exception as exc:  # locking or committing failed: recorded on the email, out of it
        logger.exception("processing email %s failed", email_id)
        return _record_failure(email_id, exc)


def emails_process_batch(*, mailbox_id: int, email_ids: list[int]) -> list[ProcessingOutcome]:
    """Apply the mailbox's action to a batch of its new emails in ONE transaction.

    The same exactly-once rules as `email_process` (the mailbox row locked, each email's status
    checked and set under the lock, one savepoint per email so that one failing email is recorded
    on itself and never fails the others), but the lock, the auto-response rules and the own
    addresses are taken once for the batch, and the batch commits once (on SQLite a commit is a
    disk sync: per email, it was most of the cost of processing). Emails are processed in id
    order, so a reply in the batch comes after the email it answers. If the transaction itself
    fails (the lock, the commit), each email is processed again on its own.
    """
    if not email_ids:
        return []
    try:
        with transaction.atomic():
            mailbox = Mailbox.objects.select_for_update().get(pk=mailbox_id)
            emails = list(
                Email.objects.select_for_update()
                .filter(pk__in=email_ids, mailbox_id=mailbox_id)
                .order_by("pk")
            )
            planning = auto_reply_planning_load(mailbox_id=mailbox_id)
            outcomes: list[ProcessingOutcome] = []
            for email in emails:
                if email.processing_status not in (ProcessingStatus.PENDING, ProcessingStatus.FAILED):
                    outcomes.append(
                        ProcessingOutcome(
                            email.pk, ProcessingResult.ALREADY_DONE, email.lead_id, email.case_id
                        )
                    )
                    continue
                email.mailbox = mailbox
                earlier_ids: list[int] = []
                for earlier in _unprocessed_emails_it_answers(email):
                    earlier.mailbox = mailbox
                    earlier_ids += _process_in_savepoint(earlier, mailbox, planning).auto_reply_ids
                outcome = _process_in_savepoint(email, mailbox, planning)
                outcomes.append(replace(outcome, auto_reply_ids=tuple(earlier_ids) + outcome.auto_reply_ids))
        return outcomes
    except Exception:  # the batch's own transaction failed: each email on its own, recorded there
        logger.exception("processing a batch of %s emails of mailbox %s failed", len(email_ids), mailbox_id)
        return [email_process(email_id=email_id) for email_id in sorted(email_ids)]


def _process_in_savepoint(
    email: Email, mailbox: Mailbox, planning: AutoReplyPlanning | None = None
) -> ProcessingOutcome:
    """Process one locked email; if anything raises, roll back to the savepoint (on PostgreSQL a
    failed statement aborts the whole transaction otherwise) and record the failure on it."""
    try:
        with transaction.atomic():
            return _process_locked(email, mailbox, planning)
    except Exception as exc:  # one bad email must not stop the others; it is recorded
        logger.exception("processing email %s failed", email.pk)
        return _record_failure(email.pk, exc)


def _record_failure(email_id: int, exc: Exception) -> ProcessingOutcome:
    message = f"{type(exc).__name__}: {exc}"
    failed = Email.objects.filter(
        pk=email_id, processing_status__in=[ProcessingStatus.PENDING, ProcessingStatus.FAILED]
    )
    attempts = (failed.values_list("processing_attempts", flat=True).first() or 0) + 1
    failed.update(
        processing_status=ProcessingStatus.FAILED,
        processing_error=message,
        processing_attempts=attempts,
        processing_next_attempt_at=timezone.now() + processing_retry_delay(attempts),
    )
    return ProcessingOutcome(email_id, ProcessingResult.FAILED, error=message)


def _retry_due() -> Q:
    """Failed fewer than MAX_PROCESSING_ATTEMPTS times and past its backoff."""
    return Q(processing_status=ProcessingStatus.FAILED, processing_attempts__lt=MAX_PROCESSING_ATTEMPTS) & (
        Q(processing_next_attempt_at__isnull=True) | Q(processing_next_attempt_at__lte=timezone.now())
    )


def _unprocessed_emails_it_answers(email: Email) -> list[Email]:
    """The earlier emails this one references that are due: one given up on or waiting for its
    backoff is not retried by every reply of its thread (that would spend its attempts at the
    pace of the replies and repeat its failure in each of them)."""
    ids = referenced_message_ids(email)
    if not ids:
        return []
    return list(
        Email.objects.select_for_update()
        .filter(
            Q(processing_status=ProcessingStatus.PENDING) | _retry_due(),
            mailbox_id=email.mailbox_id,
            message_id__in=ids,
            pk__lt=email.pk,
            is_history=False,
        )
        .order_by("pk")
    )


def _process_locked(email: Email, mailbox: Mailbox, planning: AutoReplyPlanning | None) -> ProcessingOutcome:
    outcome = _apply_action(email, mailbox)
    email.processing_status = ProcessingStatus.DONE
    email.processing_error = ""
    email.processing_attempts = F("processing_attempts") + 1
    email.save(update_fields=["lead", "case", "processing_status", "processing_error", "processing_attempts"])
    joined = outcome.result in (ProcessingResult.CASE_JOINED, ProcessingResult.LEAD_JOINED)
    auto_reply_ids = auto_replies_plan_for_email(email=email, joined_existing=joined, planning=planning)
    return replace(outcome, auto_reply_ids=tuple(auto_reply_ids))


def _apply_action(email: Email, mailbox: Mailbox) -> ProcessingOutcome:
    replied_case = case_find_for_reply(email=email)
    if replied_case is not None and not (
        replied_case.status == CaseStatus.CLOSED and mailbox.processing_action != ProcessingAction.CASE
    ):
        case = case_add_reply(case=replied_case, email=email)
        email.case = case
        result = (
            ProcessingResult.CASE_JOINED if case.pk == replied_case.pk else ProcessingResult.CASE_FOLLOW_UP
        )
        return ProcessingOutcome(email.pk, result, case_id=case.pk)
    if mailbox.processing_action == ProcessingAction.CASE:
        email.case = case_create_from_email(email=email)
        return ProcessingOutcome(email.pk, ProcessingResult.CASE_CREATED, case_id=email.case.pk)
    if mailbox.processing_action == ProcessingAction.LEAD:
        lead = lead_create_or_join_from_email(email=email, allow_join=mailbox.lead_join_open_lead)
        email.lead = lead
        result = (
            ProcessingResult.LEAD_CREATED
            if lead.source_email_id == email.pk
            else ProcessingResult.LEAD_JOINED
        )
        return ProcessingOutcome(email.pk, result, lead_id=lead.pk)
    return ProcessingOutcome(email.pk, ProcessingResult.NOTHING)


def email_convert_to_case(*, email_id: int) -> Case:
    """By hand (admin, staff pages), also for history: a second call returns the same case."""
    with transaction.atomic():
        email, _mailbox = _lock(email_id)
        if email.case_id:
            return Case.objects.get(pk=email.case_id)
        if email.lead_id:
            raise ConversionRefused("this email already belongs to a lead")
        email.case = case_create_from_email(email=email)
        email.processing_status = ProcessingStatus.DONE
        email.save(update_fields=["case", "processing_status"])
        return email.case


def email_convert_to_lead(*, email_id: int) -> Lead:
    with transaction.atomic():
        email, _mailbox = _lock(email_id)
        if email.lead_id:
            return Lead.objects.get(pk=email.lead_id)
        if email.case_id:
            raise ConversionRefused("this email already belongs to a case")
        email.lead = lead_create_or_join_from_email(email=email, allow_join=False)
        email.processing_status = ProcessingStatus.DONE
        email.save(update_fields=["lead", "processing_status"])
        return email.lead


def emails_needing_processing(*, mailbox_id: int, stored_before: datetime | None = None) -> list[int]:
    """New emails whose processing has not finished: just stored or interrupted by a crash
    (`stored_before` keeps out those whose task is probably still queued), or failed fewer than
    MAX_PROCESSING_ATTEMPTS times and due again after their backoff."""
    pending = Q(processing_status=ProcessingStatus.PENDING)
    if stored_before is not None:
        pending &= Q(stored_at__lt=stored_before)
    emails = Email.objects.filter(mailbox_id=mailbox_id).filter(pending | _retry_due())
    return list(emails.order_by("pk").values_list("pk", flat=True))
