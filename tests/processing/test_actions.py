"""Processing rules: leads, cases, threading, exactly once (database-level, no IMAP)."""

import threading

import pytest
from django.db import IntegrityError, connections, transaction
from django.utils import timezone

from mailboxes.models import Email, ProcessingStatus
from processing.models import Case, CaseStatus, Lead
from processing.services import (
    ConversionRefused,
    email_convert_to_case,
    email_convert_to_lead,
    email_process,
    emails_needing_processing,
)
from processing.services.leads import readable_name
from tests.factories import CaseFactory, EmailFactory, MailboxFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def case_mailbox():
    owner, assignee = UserFactory(), UserFactory()
    return MailboxFactory(
        processing_action="case",
        default_owner=owner,
        default_case_assignee=assignee,
        default_case_status="in_progress",
        default_case_priority="high",
    )


@pytest.fixture
def lead_mailbox():
    return MailboxFactory(processing_action="lead", default_owner=UserFactory())


def test_case_mailbox_creates_a_case_with_the_mailbox_defaults(case_mailbox):
    email = EmailFactory(
        mailbox=case_mailbox, subject="Printer on fire", text_body="Please help", from_name="Ann"
    )
    outcome = email_process(email_id=email.pk)
    assert outcome.result == "case_created"
    case = Case.objects.get()
    assert (case.subject, case.description, case.reporter_address, case.reporter_name) == (
        "Printer on fire",
        "Please help",
        "alice@example.com",
        "Ann",
    )
    assert (case.status, case.priority) == ("in_progress", "high")
    assert (case.owner, case.assignee) == (case_mailbox.default_owner, case_mailbox.default_case_assignee)
    assert (case.mailbox, case.source_email) == (case_mailbox, email)
    email.refresh_from_db()
    assert (email.case, email.processing_status) == (case, ProcessingStatus.DONE)


def test_attachments_stay_reachable_from_the_case(case_mailbox):
    from tests.factories import AttachmentFactory

    email = EmailFactory(mailbox=case_mailbox)
    AttachmentFactory(email=email, filename="invoice.pdf")
    email_process(email_id=email.pk)
    case = Case.objects.get()
    assert [a.filename for e in case.emails.all() for a in e.attachments.all()] == ["invoice.pdf"]


@pytest.mark.parametrize("how", ["in_reply_to", "references", "subject_token"])
def test_reply_joins_the_case(case_mailbox, how):
    original = EmailFactory(mailbox=case_mailbox, message_id="<orig@example.com>")
    email_process(email_id=original.pk)
    case = Case.objects.get()
    reply_fields = {
        "in_reply_to": {"in_reply_to": "<orig@example.com>"},
        "references": {"references": "<older@example.com>\n<orig@example.com>"},
        "subject_token": {"subject": f"Re: [#{case.number}] still broken"},
    }[how]
    reply = EmailFactory(mailbox=case_mailbox, **reply_fields)
    outcome = email_process(email_id=reply.pk)
    assert (outcome.result, outcome.case_id) == ("case_joined", case.pk)
    assert Case.objects.count() == 1
    assert set(case.emails.values_list("pk", flat=True)) == {original.pk, reply.pk}


def test_subject_token_from_a_stranger_does_not_join(case_mailbox):
    original = EmailFactory(mailbox=case_mailbox, from_address="alice@example.com")
    email_process(email_id=original.pk)
    case = Case.objects.get()
    case.status = CaseStatus.RESOLVED
    case.save()
    stranger = EmailFactory(
        mailbox=case_mailbox, from_address="mallory@evil.example", subject=f"Re: [#{case.number}] hi"
    )
    assert email_process(email_id=stranger.pk).result == "case_created"
    case.refresh_from_db()
    assert (case.status, case.emails.count()) == (CaseStatus.RESOLVED, 1)  # not reopened, not joined
    colleague = EmailFactory(
        mailbox=case_mailbox, from_address="bob@example.com", in_reply_to=original.message_id
    )
    email_process(email_id=colleague.pk)  # joins by header: now on the case
    by_token = EmailFactory(
        mailbox=case_mailbox, from_address="BOB@example.com", subject=f"[#{case.number}] more"
    )
    assert email_process(email_id=by_token.pk).result == "case_joined"


def test_subject_token_of_another_mailbox_does_not_join(case_mailbox):
    other_case = CaseFactory(subject="x", mailbox=MailboxFactory())
    email = EmailFactory(mailbox=case_mailbox, subject=f"[#{other_case.number}] hi")
    assert email_process(email_id=email.pk).result == "case_created"
    assert Case.objects.count() == 2


@pytest.mark.parametrize(("reopen", "expected_status"), [(True, "open"), (False, "resolved")])
def test_reply_to_resolved_case_reopens_when_configured(case_mailbox, reopen, expected_status):
    case_mailbox.reopen_resolved_cases = reopen
    case_mailbox.save()
    original = EmailFactory(mailbox=case_mailbox, message_id="<orig@example.com>")
    email_process(email_id=original.pk)
    Case.objects.update(status=CaseStatus.RESOLVED)
    reply = EmailFactory(mailbox=case_mailbox, in_reply_to="<orig@example.com>")
    assert email_process(email_id=reply.pk).result == "case_joined"
    assert Case.objects.get().status == expected_status


def test_reply_to_closed_case_opens_a_new_linked_case(case_mailbox):
    original = EmailFactory(mailbox=case_mailbox, message_id="<orig@example.com>")
    email_process(email_id=original.pk)
    old = Case.objects.get()
    old.status = CaseStatus.CLOSED
    old.save()
    reply = EmailFactory(mailbox=case_mailbox, in_reply_to="<orig@example.com>", subject="Re: again")
    outcome = email_process(email_id=reply.pk)
    assert outcome.result == "case_follow_up"
    new = Case.objects.get(pk=outcome.case_id)
    assert (new.previous_case, new.subject, new.number) == (old, "Re: again", old.number + 1)
    old.refresh_from_db()
    assert old.status == CaseStatus.CLOSED


def test_lead_mailbox_creates_lead_and_joins_open_lead(lead_mailbox):
    first = EmailFactory(mailbox=lead_mailbox, from_name="", from_address="john.doe-smith@acme.example")
    second = EmailFactory(mailbox=lead_mailbox, from_name="", from_address="John.Doe-Smith@acme.example")
    assert email_process(email_id=first.pk).result == "lead_created"
    assert email_process(email_id=second.pk).result == "lead_joined"
    lead = Lead.objects.get()
    assert (lead.name, lead.email, lead.owner, lead.source_email) == (
        "John Doe Smith",
        "john.doe-smith@acme.example",
        lead_mailbox.default_owner,
        first,
    )
    assert (lead.subject, lead.notes) == (first.subject, first.text_body)
    assert lead.emails.count() == 2


def test_lead_join_can_be_switched_off(lead_mailbox):
    lead_mailbox.lead_join_open_lead = False
    lead_mailbox.save()
    for _ in range(2):
        email_process(email_id=EmailFactory(mailbox=lead_mailbox).pk)
    assert Lead.objects.count() == 2


def test_lost_lead_is_not_joined(lead_mailbox):
    email_process(email_id=EmailFactory(mailbox=lead_mailbox).pk)
    Lead.objects.update(status="lost")
    assert email_process(email_id=EmailFactory(mailbox=lead_mailbox).pk).result == "lead_created"


def test_lead_uses_display_name_when_present(lead_mailbox):
    email_process(email_id=EmailFactory(mailbox=lead_mailbox, from_name="Zoë Müller").pk)
    assert Lead.objects.get().name == "Zoë Müller"


@pytest.mark.parametrize(
    ("address", "name"),
    [("jane_doe@x.org", "Jane Doe"), ("info@x.org", "Info"), ("", "Unknown sender")],
)
def test_readable_name(address, name):
    assert readable_name(address) == name


def test_none_mailbox_creates_nothing():
    email = EmailFactory(mailbox=MailboxFactory(processing_action="none"))
    assert email_process(email_id=email.pk).result == "nothing"
    assert (Lead.objects.count(), Case.objects.count()) == (0, 0)
    email.refresh_from_db()
    assert email.processing_status == ProcessingStatus.DONE


def test_processing_twice_is_a_no_op(case_mailbox):
    email = EmailFactory(mailbox=case_mailbox)
    assert email_process(email_id=email.pk).result == "case_created"
    assert email_process(email_id=email.pk).result == "already_done"
    assert Case.objects.count() == 1


def test_history_is_never_processed(case_mailbox):
    EmailFactory(mailbox=case_mailbox, is_history=True, processing_status=ProcessingStatus.SKIPPED)
    assert emails_needing_processing(mailbox_id=case_mailbox.pk) == []
    email = Email.objects.get()
    assert email_process(email_id=email.pk).result == "already_done"
    assert Case.objects.count() == 0


def test_database_refuses_a_second_case_from_one_email(case_mailbox):
    email = EmailFactory(mailbox=case_mailbox)
    CaseFactory(subject="a", mailbox=case_mailbox, source_email=email)
    with pytest.raises(IntegrityError), transaction.atomic():
        CaseFactory(subject="b", mailbox=case_mailbox, source_email=email)


def test_database_refuses_an_email_in_both_a_lead_and_a_case(case_mailbox):
    email = EmailFactory(mailbox=case_mailbox)
    case = CaseFactory(subject="a", mailbox=case_mailbox)
    lead = Lead.objects.create(name="a", email="a@x", mailbox=case_mailbox)
    with pytest.raises(IntegrityError), transaction.atomic():
        Email.objects.filter(pk=email.pk).update(case=case, lead=lead)


def test_manual_conversion_is_idempotent_and_works_on_history():
    mailbox = MailboxFactory(processing_action="none")
    history = EmailFactory(mailbox=mailbox, is_history=True, processing_status=ProcessingStatus.SKIPPED)
    case = email_convert_to_case(email_id=history.pk)
    assert email_convert_to_case(email_id=history.pk) == case
    assert Case.objects.count() == 1
    with pytest.raises(ConversionRefused):
        email_convert_to_lead(email_id=history.pk)
    other = EmailFactory(mailbox=mailbox)
    lead = email_convert_to_lead(email_id=other.pk)
    assert email_convert_to_lead(email_id=other.pk) == lead
    assert Lead.objects.count() == 1
    other.refresh_from_db()
    assert other.processing_status == ProcessingStatus.DONE


def test_failure_is_recorded_and_retried_then_given_up(case_mailbox, monkeypatch):
    email = EmailFactory(mailbox=case_mailbox)

    def explode(**kwargs):
        raise RuntimeError("database hiccup")

    monkeypatch.setattr("processing.services.actions.case_create_from_email", explode)
    outcome = email_process(email_id=email.pk)
    assert (outcome.result, outcome.error) == ("failed", "RuntimeError: database hiccup")
    email.refresh_from_db()
    assert (email.processing_status, email.processing_attempts) == (ProcessingStatus.FAILED, 1)
    assert email.processing_error == "RuntimeError: database hiccup"
    # Not at the next poll: after its backoff (1, 4, 16, 64 minutes).
    wait = (email.processing_next_attempt_at - timezone.now()).total_seconds()
    assert wait == pytest.approx(60, abs=5)
    assert emails_needing_processing(mailbox_id=case_mailbox.pk) == []
    delays = []
    for _ in range(4):
        Email.objects.filter(pk=email.pk).update(processing_next_attempt_at=timezone.now())
        assert emails_needing_processing(mailbox_id=case_mailbox.pk) == [email.pk]
        email_process(email_id=email.pk)
        email.refresh_from_db()
        delays.append(round((email.processing_next_attempt_at - timezone.now()).total_seconds() / 60))
    assert delays == [4, 16, 64, 256]
    Email.objects.filter(pk=email.pk).update(processing_next_attempt_at=timezone.now())
    assert emails_needing_processing(mailbox_id=case_mailbox.pk) == []  # 5 attempts: given up
    monkeypatch.undo()
    assert email_process(email_id=email.pk).result == "case_created"  # a manual retry still works


def test_reply_processed_before_its_original_still_joins(case_mailbox):
    original = EmailFactory(mailbox=case_mailbox, message_id="<orig@example.com>")
    reply = EmailFactory(mailbox=case_mailbox, in_reply_to="<orig@example.com>")
    outcome = email_process(email_id=reply.pk)  # a worker picked the reply first
    assert outcome.result == "case_joined"
    original.refresh_from_db()
    assert original.processing_status == ProcessingStatus.DONE
    assert Case.objects.count() == 1
    assert Case.objects.get().source_email == original
    assert email_process(email_id=original.pk).result == "already_done"


@pytest.mark.django_db(transaction=True)
def test_concurrent_processing_gives_one_case_per_email():
    mailbox = MailboxFactory(processing_action="case")
    emails = [EmailFactory(mailbox=mailbox) for _ in range(10)]
    errors = []
    barrier = threading.Barrier(3)

    def work() -> None:
        try:
            barrier.wait()
            for email in emails:
                email_process(email_id=email.pk)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert Case.objects.count() == 10
    assert sorted(Case.objects.values_list("source_email_id", flat=True)) == sorted(e.pk for e in emails)
    assert len(set(Case.objects.values_list("number", flat=True))) == 10
    assert set(Email.objects.values_list("processing_status", flat=True)) == {ProcessingStatus.DONE}


# -- one unit of failure per email: an earlier email that fails never fails its replies ------------


def _fail_for(monkeypatch, failing: set[int]) -> None:
    """Case creation raises for the emails whose ids are in `failing` (an exception of the action)."""
    from processing.services import actions

    real = actions.case_create_from_email

    def create(*, email, **kwargs):
        if email.pk in failing:
            raise RuntimeError(f"cannot open a case for email {email.pk}")
        return real(email=email, **kwargs)

    monkeypatch.setattr(actions, "case_create_from_email", create)


def _break(how: str, earlier: Email, monkeypatch) -> str:
    """Make processing `earlier` fail, by an exception of the action or by the database refusing
    a row (a case already created from it: the one-to-one `source_email` constraint). Returns the
    start of the error recorded on it."""
    if how == "exception":
        _fail_for(monkeypatch, {earlier.pk})
        return "RuntimeError: cannot open a case"
    CaseFactory(subject="left over", mailbox=earlier.mailbox, source_email=earlier)
    return "IntegrityError"


@pytest.fixture
def thread(case_mailbox):
    earlier = EmailFactory(mailbox=case_mailbox, message_id="<first@example.com>")
    reply = EmailFactory(mailbox=case_mailbox, in_reply_to="<first@example.com>")
    return earlier, reply


@pytest.mark.parametrize("how", ["exception", "database"])
def test_failing_earlier_email_does_not_fail_its_reply(thread, monkeypatch, how):
    earlier, reply = thread
    error = _break(how, earlier, monkeypatch)
    outcome = email_process(email_id=reply.pk)
    assert outcome.result == "case_created"  # no case to join: the reply opens its own
    reply.refresh_from_db()
    assert (reply.processing_status, reply.processing_attempts, reply.processing_error) == (
        ProcessingStatus.DONE,
        1,
        "",
    )
    assert reply.case.source_email == reply
    earlier.refresh_from_db()
    assert (earlier.processing_status, earlier.processing_attempts) == (ProcessingStatus.FAILED, 1)
    assert earlier.processing_error.startswith(error)
    wait = (earlier.processing_next_attempt_at - timezone.now()).total_seconds()
    assert wait == pytest.approx(60, abs=5)


@pytest.mark.parametrize("how", ["exception", "database"])
def test_earlier_email_in_backoff_is_not_retried_by_each_reply(thread, monkeypatch, how):
    earlier, reply = thread
    _break(how, earlier, monkeypatch)
    email_process(email_id=reply.pk)
    second = EmailFactory(mailbox=earlier.mailbox, in_reply_to="<first@example.com>")
    assert email_process(email_id=second.pk).result == "case_created"
    earlier.refresh_from_db()
    assert (earlier.processing_status, earlier.processing_attempts) == (ProcessingStatus.FAILED, 1)


def test_earlier_email_given_up_is_not_retried_by_a_reply(thread, monkeypatch):
    earlier, reply = thread
    _fail_for(monkeypatch, {earlier.pk})
    Email.objects.filter(pk=earlier.pk).update(
        processing_status=ProcessingStatus.FAILED, processing_attempts=5, processing_next_attempt_at=None
    )
    assert email_process(email_id=reply.pk).result == "case_created"
    earlier.refresh_from_db()
    assert (earlier.processing_status, earlier.processing_attempts) == (ProcessingStatus.FAILED, 5)


@pytest.mark.parametrize("how", ["exception", "database"])
def test_earlier_email_due_again_fails_again_on_itself_only(thread, monkeypatch, how):
    earlier, reply = thread
    _break(how, earlier, monkeypatch)
    email_process(email_id=reply.pk)
    Email.objects.filter(pk=earlier.pk).update(processing_next_attempt_at=timezone.now())
    second = EmailFactory(mailbox=earlier.mailbox, in_reply_to="<first@example.com>")
    assert email_process(email_id=second.pk).result == "case_created"
    earlier.refresh_from_db()
    assert (earlier.processing_status, earlier.processing_attempts) == (ProcessingStatus.FAILED, 2)
    assert Email.objects.get(pk=second.pk).processing_status == ProcessingStatus.DONE


def test_failures_of_a_reply_and_of_its_earlier_email_are_both_recorded(thread, monkeypatch):
    earlier, reply = thread
    _fail_for(monkeypatch, {earlier.pk, reply.pk})
    outcome = email_process(email_id=reply.pk)
    assert (outcome.result, outcome.error) == (
        "failed",
        f"RuntimeError: cannot open a case for email {reply.pk}",
    )
    rows = Email.objects.filter(pk__in=[earlier.pk, reply.pk]).order_by("pk")
    assert [(e.processing_status, e.processing_attempts, e.processing_error) for e in rows] == [
        (ProcessingStatus.FAILED, 1, f"RuntimeError: cannot open a case for email {earlier.pk}"),
        (ProcessingStatus.FAILED, 1, f"RuntimeError: cannot open a case for email {reply.pk}"),
    ]
    assert Case.objects.count() == 0


def test_case_number_collision_takes_the_next_number_in_the_same_transaction(case_mailbox, monkeypatch):
    from processing.models import FIRST_CASE_NUMBER
    from processing.services.cases import case_number_allocate

    CaseFactory(mailbox=case_mailbox)
    real_aggregate = Case.objects.aggregate
    reads = []

    def stale_first_read(**kwargs):
        # The first read misses the case committed by a concurrent creator.
        reads.append(1)
        return {"highest": None} if len(reads) == 1 else real_aggregate(**kwargs)

    monkeypatch.setattr(Case.objects, "aggregate", stale_first_read)
    with transaction.atomic():
        case = case_number_allocate(case=Case(subject="second", mailbox=case_mailbox))
        assert Case.objects.count() == 2  # the transaction is still usable after the collision
    assert (case.number, len(reads)) == (FIRST_CASE_NUMBER + 1, 2)
    assert Case.objects.get(pk=case.pk).number == FIRST_CASE_NUMBER + 1
