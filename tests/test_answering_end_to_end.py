"""Answering through every real part: a customer's email arrives in Dovecot, becomes a case, an
agent answers from the staff page, the real SMTP server receives the answer once, the Sent folder
holds the copy, and the customer's reply to it threads back into the same case."""

from __future__ import annotations

import email
import email.policy

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from mailboxes.models import Email, EmailDirection, OutboundMessage, OutboundStatus, SentCopyStatus
from processing.models import Case, CaseStatus
from tests.factories import MailboxFactory, UserFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

QUESTION = (
    b"From: Ann Customer <ann@customer.example>\r\nTo: support@acme.example\r\n"
    b"Subject: Printer broken\r\nMessage-ID: <q1@customer.example>\r\n"
    b"Date: Mon, 2 Nov 2026 10:00:00 +0000\r\n\r\nThe printer is broken.\r\n"
)


@pytest.fixture
def mailbox(imap_account, smtp_server):
    mailbox = MailboxFactory.on_dovecot(
        imap_account,
        email="support@acme.example",
        label="Support",
        smtp_host=smtp_server.host,
        smtp_port=smtp_server.port,
        smtp_security="none",
        smtp_username="",
        processing_action="case",
        history_import="none",
        imap_sent_folder="Sent",
    )
    poll(mailbox)  # first contact: the folder is empty
    return mailbox


@pytest.fixture
def agent(mailbox):
    user = UserFactory(username="alex")
    mailbox.authorized_users.add(user)
    client = Client()
    client.force_login(user)
    return client


def poll(mailbox) -> None:
    call_command("poll_mailboxes", "--mailbox", str(mailbox.pk))


def answer(client, original, django_capture_on_commit_callbacks, *, key=None, **fields):
    form = client.get(reverse("answers:reply", args=[original.pk])).context["form"]
    data = {name: form.initial.get(name, "") for name in ("to", "cc", "bcc", "subject", "body")}
    data |= {"submission_key": key or form.initial["submission_key"], "include_quote": "on", "send": "1"}
    data |= fields
    with django_capture_on_commit_callbacks(execute=True):
        return client.post(reverse("answers:reply", args=[original.pk]), data)


def sent_folder(imap_account) -> list[email.message.EmailMessage]:
    with imap_account.client() as client:
        client.select_folder("Sent", readonly=True)
        fetched = client.fetch(client.search(["ALL"]), ["BODY.PEEK[]", "FLAGS"])
    return [
        email.message_from_bytes(data[b"BODY[]"], policy=email.policy.default)  # type: ignore[misc]
        for data in fetched.values()
    ]


def test_an_answer_goes_out_once_is_kept_in_sent_and_the_reply_threads_back(
    mailbox, agent, imap_account, smtp_server, django_capture_on_commit_callbacks
):
    imap_account.append(QUESTION)
    poll(mailbox)
    case = Case.objects.get()
    original = case.emails.get()

    response = answer(agent, original, django_capture_on_commit_callbacks, body="We fix it today.")
    assert response.status_code == 302
    [received] = smtp_server.wait_for(1)
    assert received.rcpt_tos == ("ann@customer.example",)
    assert received.message["Subject"] == f"Re: [#{case.number}] Printer broken"
    assert received.message["In-Reply-To"] == "<q1@customer.example>"
    ours = Email.objects.get(direction=EmailDirection.OUTGOING)
    assert (ours.case_id, ours.message_id) == (case.pk, received.message["Message-ID"])
    outbound = OutboundMessage.objects.get()
    assert (outbound.status, outbound.sent_copy_status) == (OutboundStatus.SENT, SentCopyStatus.DONE)
    [copy] = sent_folder(imap_account)
    assert copy["Message-ID"] == ours.message_id
    case.refresh_from_db()
    assert case.first_response_at == outbound.sent_at

    customer_reply = (
        f"From: Ann Customer <ann@customer.example>\r\nTo: support@acme.example\r\n"
        f"Subject: Re: [#{case.number}] Printer broken\r\nMessage-ID: <q2@customer.example>\r\n"
        f"In-Reply-To: {ours.message_id}\r\nReferences: <q1@customer.example> {ours.message_id}\r\n"
        f"Date: Mon, 2 Nov 2026 12:00:00 +0000\r\n\r\nThanks, it works again.\r\n"
    ).encode()
    imap_account.append(customer_reply)
    poll(mailbox)
    poll(mailbox)  # nothing more on a second poll

    assert Case.objects.count() == 1
    assert sorted(case.emails.values_list("direction", "subject")) == [
        (EmailDirection.INCOMING, "Printer broken"),
        (EmailDirection.INCOMING, f"Re: [#{case.number}] Printer broken"),
        (EmailDirection.OUTGOING, f"Re: [#{case.number}] Printer broken"),
    ]
    assert len(smtp_server.messages) == 1  # polling sent nothing more


def test_a_case_waiting_for_the_customer_opens_again_when_the_customer_answers(
    mailbox, agent, imap_account, smtp_server, django_capture_on_commit_callbacks
):
    imap_account.append(QUESTION)
    poll(mailbox)
    case = Case.objects.get()
    answer(agent, case.emails.get(), django_capture_on_commit_callbacks, next_status=CaseStatus.WAITING)
    case.refresh_from_db()
    assert case.status == CaseStatus.WAITING
    ours = Email.objects.get(direction=EmailDirection.OUTGOING)
    imap_account.append(
        (
            f"From: ann@customer.example\r\nTo: support@acme.example\r\nSubject: Re: Printer broken\r\n"
            f"Message-ID: <q3@customer.example>\r\nIn-Reply-To: {ours.message_id}\r\n\r\nStill broken.\r\n"
        ).encode()
    )
    poll(mailbox)
    case.refresh_from_db()
    assert case.status == CaseStatus.OPEN
    assert case.emails.count() == 3


def test_a_sent_folder_that_is_the_polled_folder_is_not_ingested_again(
    mailbox, agent, imap_account, smtp_server, django_capture_on_commit_callbacks
):
    mailbox.imap_sent_folder = "INBOX"
    mailbox.save(update_fields=["imap_sent_folder"])
    imap_account.append(QUESTION)
    poll(mailbox)
    answer(agent, Email.objects.get(), django_capture_on_commit_callbacks)
    assert OutboundMessage.objects.get().sent_copy_status == SentCopyStatus.DONE
    poll(mailbox)
    assert Email.objects.count() == 2  # the question and our answer, not the copy
    assert Case.objects.count() == 1


def test_a_double_submit_sends_one_message(
    mailbox, agent, imap_account, smtp_server, django_capture_on_commit_callbacks
):
    imap_account.append(QUESTION)
    poll(mailbox)
    original = Email.objects.get()
    form = agent.get(reverse("answers:reply", args=[original.pk])).context["form"]
    key = form.initial["submission_key"]
    first = answer(agent, original, django_capture_on_commit_callbacks, key=key)
    second = answer(agent, original, django_capture_on_commit_callbacks, key=key)
    assert (first.status_code, second.status_code) == (302, 302)
    assert len(smtp_server.wait_for(1)) == 1
    assert OutboundMessage.objects.count() == 1
    assert len(sent_folder(imap_account)) == 1


def test_someone_without_access_gets_404_on_every_answer_url(mailbox, imap_account, smtp_server):
    imap_account.append(QUESTION)
    poll(mailbox)
    original = Email.objects.get()
    outsider = Client()
    outsider.force_login(UserFactory(username="eve"))
    for name in ("answers:reply", "answers:reply_all", "answers:forward"):
        url = reverse(name, args=[original.pk])
        assert outsider.get(url).status_code == 404
        assert outsider.post(url, {"send": "1", "to": "eve@evil.example", "body": "x"}).status_code == 404
    assert outsider.post(reverse("answers:send_again", args=[original.pk])).status_code == 404
    assert smtp_server.messages == []
