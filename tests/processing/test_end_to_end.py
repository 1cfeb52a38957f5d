"""The whole chain through real servers: Dovecot -> store -> lead/case -> auto-reply -> SMTP."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from autoresponse.models import AutoReply, AutoReplyStatus
from mailboxes.models import Email, ProcessingStatus
from mailhub.tasks import poll_mailbox
from processing.models import Case, Lead
from tests.factories import AutoResponseRuleFactory, EmailTemplateFactory, MailboxFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def message(
    n: int, *, sender: str = "ann@customer.example", in_reply_to: str = "", subject: str = ""
) -> bytes:
    reply = f"In-Reply-To: <m{in_reply_to}@customer.example>\r\n" if in_reply_to else ""
    return (
        f"From: Customer <{sender}>\r\nTo: support@acme.example\r\n"
        f"Subject: {subject or f'Question {n}'}\r\nMessage-ID: <m{n}@customer.example>\r\n{reply}"
        f"Date: Mon, 2 Nov 2026 10:00:00 +0000\r\n\r\nBody {n}\r\n"
    ).encode()


@pytest.fixture
def case_mailbox(imap_account, smtp_server):
    mailbox = MailboxFactory.on_dovecot(
        imap_account,
        email="support@acme.example",
        smtp_host=smtp_server.host,
        smtp_port=smtp_server.port,
        smtp_security="none",
        processing_action="case",
        history_import="none",
    )
    template = EmailTemplateFactory(subject="[{{ case.reference }}] {{ email.subject }}", text_body="Got it.")
    AutoResponseRuleFactory(mailbox=mailbox, template=template)
    call_command("poll_mailboxes", "--mailbox", str(mailbox.pk))  # first contact: empty folder
    return mailbox


def test_poll_command_runs_the_whole_chain_once(case_mailbox, imap_account, smtp_server):
    imap_account.append(message(1))
    imap_account.append(message(2, sender="bob@customer.example"))
    imap_account.append(message(3, in_reply_to="1", subject="Re: Question 1"))
    call_command("poll_mailboxes", "--mailbox", str(case_mailbox.pk))
    call_command("poll_mailboxes", "--mailbox", str(case_mailbox.pk))  # polling twice: nothing more

    assert Email.objects.count() == 3
    assert Case.objects.count() == 2
    first = Case.objects.get(subject="Question 1")
    assert sorted(first.emails.values_list("subject", flat=True)) == ["Question 1", "Re: Question 1"]
    received = smtp_server.wait_for(2)
    assert len(received) == 2  # the reply joined its case: no second auto-response for it
    assert sorted(m.message["Subject"] for m in received) == sorted(
        [f"[#{first.number}] Question 1", f"[#{Case.objects.get(subject='Question 2').number}] Question 2"]
    )
    assert AutoReply.objects.filter(status=AutoReplyStatus.SENT).count() == 2
    assert set(Email.objects.values_list("processing_status", flat=True)) == {ProcessingStatus.DONE}


def test_customer_reply_to_our_auto_reply_joins_the_case(case_mailbox, imap_account, smtp_server):
    imap_account.append(message(1))
    call_command("poll_mailboxes", "--mailbox", str(case_mailbox.pk))
    [auto_reply] = smtp_server.wait_for(1)
    answer = (
        "From: Customer <ann@customer.example>\r\nTo: support@acme.example\r\nSubject: thanks\r\n"
        f"Message-ID: <answer@customer.example>\r\nIn-Reply-To: {auto_reply.message['Message-ID']}\r\n"
        "\r\nThanks for the quick answer\r\n"
    ).encode()
    imap_account.append(answer)
    call_command("poll_mailboxes", "--mailbox", str(case_mailbox.pk))
    assert Case.objects.count() == 1
    assert Case.objects.get().emails.count() == 2


def test_crash_between_store_and_process_is_recovered_by_the_next_poll(
    case_mailbox, imap_account, smtp_server, monkeypatch
):
    for n in range(3):
        imap_account.append(message(n, sender=f"c{n}@customer.example"))

    def killed(**kwargs):
        raise SystemExit("worker killed after storing")

    monkeypatch.setattr("mailhub.pipeline.emails_process_batch", killed)
    with pytest.raises(SystemExit):
        call_command("poll_mailboxes", "--mailbox", str(case_mailbox.pk))
    assert Email.objects.count() == 3
    assert Case.objects.count() == 0
    assert smtp_server.messages == []

    monkeypatch.undo()
    call_command("poll_mailboxes", "--mailbox", str(case_mailbox.pk))
    call_command("poll_mailboxes", "--mailbox", str(case_mailbox.pk))
    assert Case.objects.count() == 3
    assert sorted(Case.objects.values_list("source_email__uid", flat=True)) == [1, 2, 3]
    assert len(smtp_server.wait_for(3)) == 3


def test_a_send_interrupted_long_ago_is_made_uncertain_by_the_next_poll(
    case_mailbox, imap_account, smtp_server, monkeypatch
):
    imap_account.append(message(1))

    def killed(**kwargs):
        raise SystemExit("worker killed while sending")

    monkeypatch.setattr("mailhub.pipeline.auto_reply_send", killed)
    with pytest.raises(SystemExit):
        call_command("poll_mailboxes", "--mailbox", str(case_mailbox.pk))
    monkeypatch.undo()
    # What the killed worker left: claimed ('sending') an hour ago, outcome unknown.
    AutoReply.objects.update(status=AutoReplyStatus.SENDING, claimed_at=timezone.now() - timedelta(hours=1))
    call_command("poll_mailboxes", "--mailbox", str(case_mailbox.pk))
    reply = AutoReply.objects.get()
    assert reply.status == AutoReplyStatus.UNCERTAIN
    assert reply.reason.startswith("interrupted while sending (outcome unknown)")
    assert smtp_server.messages == []


def test_celery_tasks_run_the_same_chain(case_mailbox, imap_account, smtp_server):
    # CELERY_TASK_ALWAYS_EAGER in the test settings: .delay() runs the task right here.
    imap_account.append(message(1))
    poll_mailbox(case_mailbox.pk)
    poll_mailbox(case_mailbox.pk)
    assert Case.objects.count() == 1
    assert len(smtp_server.wait_for(1)) == 1


def test_lead_and_none_mailboxes(imap_account, smtp_server, dovecot_server):
    lead_box = MailboxFactory.on_dovecot(
        imap_account,
        processing_action="lead",
        history_import="none",
    )
    other = dovecot_server.new_account()
    none_box = MailboxFactory.on_dovecot(
        imap_account,
        imap_username=other,
        processing_action="none",
        history_import="none",
    )
    call_command("poll_mailboxes")
    imap_account.append(message(1))
    imap_account.append(message(2))  # same sender: joins the open lead
    dovecot_server.append(other, message(3))
    call_command("poll_mailboxes")
    assert Lead.objects.count() == 1
    assert Lead.objects.get().emails.count() == 2
    assert none_box.emails.get().lead is None
    assert none_box.emails.get().case is None
    assert Case.objects.count() == 0
    assert lead_box.emails.count() == 2


def test_history_triggers_nothing(imap_account, smtp_server):
    for n in range(3):
        imap_account.append(message(n))
    mailbox = MailboxFactory.on_dovecot(
        imap_account,
        smtp_host=smtp_server.host,
        smtp_port=smtp_server.port,
        smtp_security="none",
        processing_action="case",
        history_import="all",
    )
    AutoResponseRuleFactory(mailbox=mailbox)
    call_command("poll_mailboxes", "--mailbox", str(mailbox.pk))
    assert Email.objects.filter(is_history=True).count() == 3
    assert (Case.objects.count(), AutoReply.objects.count(), smtp_server.messages) == (0, 0, [])
