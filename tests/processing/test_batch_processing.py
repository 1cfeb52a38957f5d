"""Processing a batch of emails in one transaction: the same outcomes as one by one, the rules
loaded once, one failing email recorded on itself without failing the others."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from autoresponse.models import AutoReply, AutoReplyStatus
from mailboxes.models import Email, ProcessingStatus
from processing.models import Case
from processing.services import actions, emails_process_batch
from processing.services.actions import ProcessingResult
from tests.factories import AutoResponseRuleFactory, EmailFactory, MailboxFactory, RuleConditionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def case_mailbox():
    mailbox = MailboxFactory(processing_action="case")
    rule = AutoResponseRuleFactory(mailbox=mailbox, name="ack")
    RuleConditionFactory(rule=rule, field="subject", operator="contains", value="Question")
    return mailbox


def _senders(count, mailbox):
    return [
        EmailFactory(
            mailbox=mailbox,
            from_address=f"c{n}@customer.example",
            subject=f"Question {n}",
            headers=[["From", f"c{n}@customer.example"], ["Subject", f"Question {n}"]],
        )
        for n in range(count)
    ]


def test_a_batch_creates_one_case_and_decides_one_auto_reply_per_email(case_mailbox):
    emails = _senders(5, case_mailbox)
    outcomes = emails_process_batch(mailbox_id=case_mailbox.pk, email_ids=[e.pk for e in emails])
    assert [o.result for o in outcomes] == [ProcessingResult.CASE_CREATED] * 5
    assert Case.objects.count() == 5
    assert list(AutoReply.objects.values_list("status", "reason")) == [(AutoReplyStatus.PENDING, "")] * 5
    assert sorted(i for o in outcomes for i in o.auto_reply_ids) == sorted(
        AutoReply.objects.values_list("pk", flat=True)
    )
    assert set(Email.objects.values_list("processing_status", flat=True)) == {ProcessingStatus.DONE}


def test_the_rules_and_the_own_addresses_are_read_once_per_batch(case_mailbox):
    emails = _senders(10, case_mailbox)
    with CaptureQueriesContext(connection) as queries:
        emails_process_batch(mailbox_id=case_mailbox.pk, email_ids=[e.pk for e in emails])
    sql = [q["sql"] for q in queries.captured_queries]
    assert sum('FROM "autoresponse_autoresponserule"' in s for s in sql) == 1
    own_addresses = [s for s in sql if s.startswith('SELECT "mailboxes_mailbox"."email" AS "email" FROM')]
    assert len(own_addresses) == 1, sql


def test_one_failing_email_is_recorded_on_itself_and_the_others_are_processed(case_mailbox, monkeypatch):
    emails = _senders(3, case_mailbox)
    real_apply = actions._apply_action

    def apply_failing_on_the_second(email, mailbox):
        if email.pk == emails[1].pk:
            raise RuntimeError("boom")
        return real_apply(email, mailbox)

    monkeypatch.setattr(actions, "_apply_action", apply_failing_on_the_second)
    outcomes = emails_process_batch(mailbox_id=case_mailbox.pk, email_ids=[e.pk for e in emails])
    assert [o.result for o in outcomes] == [
        ProcessingResult.CASE_CREATED,
        ProcessingResult.FAILED,
        ProcessingResult.CASE_CREATED,
    ]
    failed = Email.objects.get(pk=emails[1].pk)
    assert (failed.processing_status, failed.processing_error) == (
        ProcessingStatus.FAILED,
        "RuntimeError: boom",
    )
    assert Case.objects.count() == 2
    assert AutoReply.objects.count() == 2  # none for the failed email


def test_a_reply_in_the_same_batch_joins_the_case_of_the_email_it_answers(case_mailbox):
    original = EmailFactory(mailbox=case_mailbox, message_id="<first@customer.example>", subject="Question")
    reply = EmailFactory(
        mailbox=case_mailbox, in_reply_to="<first@customer.example>", subject="Re: " + original.subject
    )
    outcomes = emails_process_batch(mailbox_id=case_mailbox.pk, email_ids=[reply.pk, original.pk])
    assert [o.result for o in outcomes] == [ProcessingResult.CASE_CREATED, ProcessingResult.CASE_JOINED]
    assert Case.objects.get().emails.count() == 2


def test_emails_already_processed_are_not_processed_again(case_mailbox):
    emails = _senders(2, case_mailbox)
    emails_process_batch(mailbox_id=case_mailbox.pk, email_ids=[emails[0].pk])
    outcomes = emails_process_batch(mailbox_id=case_mailbox.pk, email_ids=[e.pk for e in emails])
    assert [o.result for o in outcomes] == [ProcessingResult.ALREADY_DONE, ProcessingResult.CASE_CREATED]
    assert Case.objects.count() == 2
    assert AutoReply.objects.count() == 2


def test_when_the_batch_transaction_fails_each_email_is_processed_on_its_own(case_mailbox, monkeypatch):
    emails = _senders(2, case_mailbox)

    def planning_fails(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(actions, "auto_reply_planning_load", planning_fails)
    outcomes = emails_process_batch(mailbox_id=case_mailbox.pk, email_ids=[e.pk for e in emails])
    assert [o.result for o in outcomes] == [ProcessingResult.CASE_CREATED] * 2
    assert Case.objects.count() == 2
