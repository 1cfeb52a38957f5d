"""Internal notes (bounds, where they go) and the case effects of answering: the first response
recorded exactly once, a customer's email reopening a waiting case, with the event of it."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from mailboxes import limits
from mailboxes.models import EmailDirection
from processing.models import Case, CaseEvent, CaseStatus, Note
from processing.services import cases as case_services
from processing.services import email_process
from processing.services.cases import case_first_response_record, case_update
from processing.services.notes import NoteRefused, note_add
from tests.factories import CaseFactory, EmailFactory, MailboxFactory, UserFactory

# -- notes --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_note_on_a_case_keeps_its_author():
    user = UserFactory(username="dana")
    case = CaseFactory()
    note = note_add(user=user, body="  Called the customer back.\n", case_id=case.pk)
    note.refresh_from_db()
    assert (note.case_id, note.email_id, note.author, note.author_name, note.body) == (
        case.pk,
        None,
        user,
        "dana",
        "Called the customer back.",
    )


@pytest.mark.django_db
def test_note_on_an_email_of_a_case_goes_to_the_case_and_keeps_the_email():
    case = CaseFactory()
    email = EmailFactory(mailbox=case.mailbox, case=case)
    note = note_add(user=UserFactory(), body="Same printer as last week", email_id=email.pk)
    assert (note.case_id, note.email_id) == (case.pk, email.pk)


@pytest.mark.django_db
def test_note_on_an_email_without_a_case_stays_on_the_email():
    email = EmailFactory()
    note = note_add(user=UserFactory(), body="Spam? Check with sales.", email_id=email.pk)
    assert (note.case_id, note.email_id) == (None, email.pk)


@pytest.mark.django_db
@pytest.mark.parametrize("body", ["", "   ", "\n\t\n", "\x00", " \x00 \n"])
def test_empty_note_is_refused(body):
    with pytest.raises(NoteRefused, match="empty"):
        note_add(user=UserFactory(), body=body, case_id=CaseFactory().pk)
    assert Note.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("extra", [1, 1_000_000])
def test_note_longer_than_the_limit_is_refused(extra):
    with pytest.raises(NoteRefused, match="longer than 100,000 characters"):
        note_add(user=UserFactory(), body="x" * (limits.MAX_NOTE_CHARS + extra), case_id=CaseFactory().pk)
    assert Note.objects.count() == 0


@pytest.mark.django_db
def test_note_of_exactly_the_limit_is_kept_whole_and_cleaned():
    body = "\x00" + "é" * limits.MAX_NOTE_CHARS + "\n"
    note = note_add(user=UserFactory(), body=body, case_id=CaseFactory().pk)
    note.refresh_from_db()
    assert note.body == "é" * limits.MAX_NOTE_CHARS


@pytest.mark.django_db
def test_note_author_name_fits_its_column():
    user = UserFactory(username="u" * 150)
    note = note_add(user=user, body="hi", case_id=CaseFactory().pk)
    assert note.author_name == "u" * 150


@pytest.mark.django_db
@pytest.mark.parametrize("targets", [{}, {"case_id": 1, "email_id": 1}])
def test_note_goes_on_exactly_one_thing(targets):
    with pytest.raises(ValueError, match="exactly one"):
        note_add(user=UserFactory(), body="hi", **targets)


@pytest.mark.django_db
@pytest.mark.parametrize("target", ["case_id", "email_id"])
def test_note_on_something_missing_is_refused(target):
    with pytest.raises(NoteRefused, match="no such"):
        note_add(user=UserFactory(), body="hi", **{target: 987654})


# -- first response -----------------------------------------------------------------------------


def _answer(case: Case, sender=None):
    return EmailFactory(
        mailbox=case.mailbox,
        case=case,
        direction=EmailDirection.OUTGOING,
        sent_by=sender,
        uidvalidity=None,
        uid=None,
    )


@pytest.mark.django_db
def test_first_response_is_recorded_once_with_its_event():
    dana, gus = UserFactory(username="dana"), UserFactory(username="gus")
    case = CaseFactory()
    first_at = case.created_at + timedelta(hours=2, minutes=5, seconds=30)
    assert case_first_response_record(email_id=_answer(case, dana).pk, at=first_at) is True
    later = first_at + timedelta(hours=1)
    assert case_first_response_record(email_id=_answer(case, gus).pk, at=later) is False
    case.refresh_from_db()
    assert case.first_response_at == first_at
    assert case.first_response_after == timedelta(hours=2, minutes=5, seconds=30)
    events = list(CaseEvent.objects.values_list("user", "username", "field", "new_value", "created_at"))
    assert events == [(dana.pk, "dana", "first_response", first_at.isoformat(), first_at)]


@pytest.mark.django_db
def test_the_same_answer_recorded_again_changes_nothing():
    case = CaseFactory()
    answer = _answer(case, UserFactory())
    at = timezone.now()
    assert case_first_response_record(email_id=answer.pk, at=at) is True
    assert case_first_response_record(email_id=answer.pk, at=at + timedelta(minutes=1)) is False
    assert CaseEvent.objects.count() == 1


@pytest.mark.django_db
def test_an_incoming_email_is_no_response():
    case = CaseFactory()
    incoming = EmailFactory(mailbox=case.mailbox, case=case)
    assert case_first_response_record(email_id=incoming.pk, at=timezone.now()) is False
    case.refresh_from_db()
    assert (case.first_response_at, CaseEvent.objects.count()) == (None, 0)


@pytest.mark.django_db
def test_an_answer_on_no_case_records_nothing():
    answer = EmailFactory(direction=EmailDirection.OUTGOING, uidvalidity=None, uid=None)
    assert case_first_response_record(email_id=answer.pk, at=timezone.now()) is False
    assert case_first_response_record(email_id=987654, at=timezone.now()) is False
    assert CaseEvent.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_two_answers_recorded_at_once_make_one_first_response(monkeypatch):
    """Both calls run in their own transaction at the same time: the one that gets the row first
    holds it (widened by a sleep in its event insert); the other's conditional UPDATE waits for
    it and then finds the value set. PostgreSQL: `python -m tests.postgres_run`."""
    case = CaseFactory()
    answers = [_answer(case, UserFactory(username=name)) for name in ("dana", "gus")]
    real_create = CaseEvent.objects.create

    def slow_create(**fields):
        time.sleep(0.5)
        return real_create(**fields)

    monkeypatch.setattr(CaseEvent.objects, "create", slow_create)
    start = threading.Barrier(2)
    results: dict[str, bool] = {}
    at = timezone.now()

    def record(answer) -> None:
        try:
            start.wait(10)
            results[answer.sent_by.username] = case_first_response_record(email_id=answer.pk, at=at)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=record, args=(answer,)) for answer in answers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results.values()) == [False, True]
    winner = next(name for name, first in results.items() if first)
    assert list(CaseEvent.objects.values_list("username", "field")) == [(winner, "first_response")]
    assert Case.objects.get().first_response_at == at


# -- a customer's email on a waiting or resolved case -------------------------------------------


def _case_of_a_thread(mailbox, status: str) -> Case:
    original = EmailFactory(mailbox=mailbox, message_id="<orig@example.com>")
    email_process(email_id=original.pk)
    Case.objects.update(status=status, resolved_at=timezone.now() if status == "resolved" else None)
    return Case.objects.get()


def _reply(mailbox):
    reply = EmailFactory(mailbox=mailbox, in_reply_to="<orig@example.com>")
    assert email_process(email_id=reply.pk).result == "case_joined"


@pytest.mark.django_db
@pytest.mark.parametrize("reopen_resolved", [True, False])
def test_customer_email_reopens_a_waiting_case_with_an_event(reopen_resolved):
    mailbox = MailboxFactory(processing_action="case", reopen_resolved_cases=reopen_resolved)
    case = _case_of_a_thread(mailbox, CaseStatus.WAITING)
    _reply(mailbox)
    case.refresh_from_db()
    assert (case.status, case.resolved_at) == (CaseStatus.OPEN, None)
    event = CaseEvent.objects.get()
    assert (event.user, event.username, event.field, event.old_value, event.new_value) == (
        None,
        "",
        "status",
        "waiting",
        "open",
    )
    assert (event.actor, event.old_display, event.new_display) == ("mailhub", "Waiting for customer", "Open")


@pytest.mark.django_db
def test_customer_email_reopening_a_resolved_case_records_the_event():
    mailbox = MailboxFactory(processing_action="case", reopen_resolved_cases=True)
    case = _case_of_a_thread(mailbox, CaseStatus.RESOLVED)
    _reply(mailbox)
    case.refresh_from_db()
    assert (case.status, case.resolved_at) == (CaseStatus.OPEN, None)
    assert list(CaseEvent.objects.values_list("username", "old_value", "new_value")) == [
        ("", "resolved", "open")
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "reopen_resolved"),
    [("open", True), ("in_progress", True), ("resolved", False)],
)
def test_customer_email_that_changes_no_status_records_no_event(status, reopen_resolved):
    mailbox = MailboxFactory(processing_action="case", reopen_resolved_cases=reopen_resolved)
    case = _case_of_a_thread(mailbox, status)
    before = case.updated_at
    _reply(mailbox)
    case.refresh_from_db()
    assert case.status == status
    assert case.updated_at > before
    assert CaseEvent.objects.count() == 0


@pytest.mark.django_db
def test_reopening_does_not_undo_a_status_staff_set_meanwhile():
    """The reply was matched to a waiting case; before it joins, staff set it in progress: the
    reopening is conditional on the status it was decided from."""
    mailbox = MailboxFactory(processing_action="case")
    case = _case_of_a_thread(mailbox, CaseStatus.WAITING)
    stale = Case.objects.get(pk=case.pk)  # read as waiting
    Case.objects.filter(pk=case.pk).update(status=CaseStatus.IN_PROGRESS)
    reply = EmailFactory(mailbox=mailbox, case=None)
    case_services.case_add_reply(case=stale, email=reply)
    case.refresh_from_db()
    assert case.status == CaseStatus.IN_PROGRESS
    assert CaseEvent.objects.count() == 0


@pytest.mark.django_db
def test_case_update_to_waiting_clears_the_resolution_date():
    user = UserFactory()
    case = CaseFactory(status=CaseStatus.RESOLVED, resolved_at=timezone.now())
    events = case_update(case_id=case.pk, user=user, status="waiting", priority=case.priority, assignee=None)
    case.refresh_from_db()
    assert (case.status, case.resolved_at) == ("waiting", None)
    assert [(e.field, e.old_value, e.new_value) for e in events] == [("status", "resolved", "waiting")]


@pytest.mark.django_db
@pytest.mark.parametrize(("status", "priority"), [("pending", "normal"), ("open", "whenever")])
def test_case_update_refuses_unknown_values(status, priority):
    case = CaseFactory()
    with pytest.raises(ValueError, match="unknown"):
        case_update(case_id=case.pk, user=UserFactory(), status=status, priority=priority, assignee=None)
    assert CaseEvent.objects.count() == 0
