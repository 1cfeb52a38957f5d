"""Answering from the staff pages, checked on what the real SMTP server received: recipients,
headers, subject, quote and attachments; access (404), CSRF, double submit, limits, canned
responses and signatures."""

from __future__ import annotations

import re
import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from mailboxes.models import Email, EmailDirection, OutboundMessage, OutboundStatus
from processing.models import AgentSignature, CaseEvent, CaseStatus
from tests.factories import (
    AttachmentFactory,
    CaseFactory,
    EmailFactory,
    EmailTemplateFactory,
    MailboxFactory,
    UserFactory,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.fixture
def mailbox(smtp_server):
    return MailboxFactory(
        email="support@acme.example",
        label="ACME Support",
        sender_name="Alex from Support",
        signature="ACME Support team",
        smtp_host=smtp_server.host,
        smtp_port=smtp_server.port,
        smtp_security="none",
        smtp_username="",
    )


@pytest.fixture
def agent(mailbox):
    user = UserFactory(username="alex", first_name="Alex", last_name="Agent")
    mailbox.authorized_users.add(user)
    return user


@pytest.fixture
def client_for(agent):
    client = Client()
    client.force_login(agent)
    return client


@pytest.fixture
def original(mailbox):
    case = CaseFactory(mailbox=mailbox, subject="Printer broken", reporter_address="ann@customer.example")
    return EmailFactory(
        mailbox=mailbox,
        case=case,
        subject="Re: RE: Printer broken",
        from_name="Ann Customer",
        from_address="ann@customer.example",
        reply_to=[["Ann's desk", "desk@customer.example"]],
        to=[["ACME Support", "Support+tickets@ACME.example"], ["Bob", "bob@customer.example"]],
        cc=[["Carl", "carl@customer.example"], ["Bob again", "BOB@customer.example"]],
        message_id="<q1@customer.example>",
        references="<q0@customer.example>",
        text_body="The printer is broken.\nPlease help.",
        html_body="<p>The printer is <b>broken</b>.</p><script>alert(1)</script>",
    )


def compose(client, email, mode="reply"):
    name = {"reply": "answers:reply", "reply_all": "answers:reply_all", "forward": "answers:forward"}[mode]
    return client.get(reverse(name, args=[email.pk]))


def submit(client, email, *, mode="reply", key=None, **fields):
    """Submit the form as the page prefilled it, with `fields` changed."""
    form = compose(client, email, mode).context["form"]
    data = {name: form.initial.get(name, "") for name in ("to", "cc", "bcc", "subject", "body")}
    data["submission_key"] = key or form.initial["submission_key"]
    data["include_quote"] = "on"
    data["forward_attachments"] = [str(pk) for pk in form.initial.get("forward_attachments") or []]
    data["send"] = "1"
    data.update(fields)
    name = {"reply": "answers:reply", "reply_all": "answers:reply_all", "forward": "answers:forward"}[mode]
    return client.post(reverse(name, args=[email.pk]), data)


def send(client, email, django_capture_on_commit_callbacks, **kwargs):
    with django_capture_on_commit_callbacks(execute=True):
        return submit(client, email, **kwargs)


def test_reply_goes_to_reply_to_with_thread_headers_case_token_quote_and_signature(
    client_for, original, smtp_server, django_capture_on_commit_callbacks
):
    response = send(client_for, original, django_capture_on_commit_callbacks, body="We fix it today.")
    assert response.status_code == 302
    assert response["Location"] == original.get_absolute_url()
    [received] = smtp_server.wait_for(1)
    message = received.message
    assert received.rcpt_tos == ("desk@customer.example",)
    assert received.mail_from == "support@acme.example"
    assert message["From"] == "Alex from Support <support@acme.example>"
    assert message["To"] == "Ann's desk <desk@customer.example>"
    assert message["Cc"] is None
    assert message["Subject"] == f"Re: [{original.case.reference}] Printer broken"
    assert message["In-Reply-To"] == "<q1@customer.example>"
    assert message["References"] == "<q0@customer.example> <q1@customer.example>"
    assert re.fullmatch(r"<[^<>@]+@acme\.example>", message["Message-ID"])
    text = message.get_body(("plain",)).get_content()
    assert text.startswith("We fix it today.\n\n")
    assert "> The printer is broken.\n> Please help.\n" in text
    assert "wrote:" in text
    html = message.get_body(("html",)).get_content()
    assert '<blockquote type="cite"' in html
    assert "<b>broken</b>" in html
    assert "<script" not in html
    received.raw.decode("ascii")  # 7-bit throughout
    outbound = OutboundMessage.objects.get()
    assert outbound.status == OutboundStatus.SENT
    outgoing = outbound.email
    assert (outgoing.direction, outgoing.sent_by, outgoing.case_id) == (
        EmailDirection.OUTGOING,
        outbound.sent_by,
        original.case_id,
    )


def test_prefilled_reply_carries_the_mailbox_signature(client_for, original):
    assert compose(client_for, original).context["form"].initial["body"] == "\n\n-- \nACME Support team"


def test_agent_signature_for_the_mailbox_wins_over_the_agents_default_and_the_mailboxes(
    client_for, original, agent
):
    AgentSignature.objects.create(user=agent, mailbox=None, text="Alex, everywhere")
    AgentSignature.objects.create(user=agent, mailbox=original.mailbox, text="Alex at Support")
    assert compose(client_for, original).context["form"].initial["body"] == "\n\n-- \nAlex at Support"


def test_reply_all_adds_to_and_cc_without_our_mailbox_nor_duplicates(
    client_for, original, smtp_server, django_capture_on_commit_callbacks
):
    send(client_for, original, django_capture_on_commit_callbacks, mode="reply_all")
    [received] = smtp_server.wait_for(1)
    assert received.message["To"] == "Ann's desk <desk@customer.example>, Bob <bob@customer.example>"
    assert received.message["Cc"] == "Carl <carl@customer.example>"
    assert received.rcpt_tos == ("desk@customer.example", "bob@customer.example", "carl@customer.example")


def test_forward_carries_the_chosen_attachments_and_the_forwarded_block(
    client_for, original, smtp_server, django_capture_on_commit_callbacks
):
    AttachmentFactory(email=original, filename="report.pdf", content_type="application/pdf")
    response = send(
        client_for,
        original,
        django_capture_on_commit_callbacks,
        mode="forward",
        to="Dana <dana@partner.example>",
        bcc="boss@partner.example",
        uploads=[SimpleUploadedFile("note.txt", b"extra file", content_type="text/plain")],
    )
    assert response.status_code == 302
    [received] = smtp_server.wait_for(1)
    message = received.message
    assert received.rcpt_tos == ("dana@partner.example", "boss@partner.example")
    assert message["Bcc"] is None
    assert b"boss@partner.example" not in received.raw
    assert message["Subject"] == f"Fwd: [{original.case.reference}] Printer broken"
    assert message["In-Reply-To"] is None
    text = message.get_body(("plain",)).get_content()
    assert "---------- Forwarded message ---------\nFrom: Ann Customer <ann@customer.example>\n" in text
    files = {part.get_filename(): part.get_content() for part in message.iter_attachments()}
    assert files == {"report.pdf": b"%PDF", "note.txt": "extra file"}


def test_double_submit_sends_one_message(
    client_for, original, smtp_server, django_capture_on_commit_callbacks
):
    key = uuid.uuid4().hex
    first = send(client_for, original, django_capture_on_commit_callbacks, key=key)
    second = send(client_for, original, django_capture_on_commit_callbacks, key=key)
    assert first.status_code == second.status_code == 302
    assert second["Location"] == original.get_absolute_url()
    smtp_server.wait_for(1)
    assert len(smtp_server.messages) == 1
    assert OutboundMessage.objects.count() == 1
    assert Email.objects.filter(direction=EmailDirection.OUTGOING).count() == 1


def test_next_status_is_applied_and_recorded(client_for, original, django_capture_on_commit_callbacks):
    send(client_for, original, django_capture_on_commit_callbacks, next_status=CaseStatus.WAITING)
    original.case.refresh_from_db()
    assert original.case.status == CaseStatus.WAITING
    assert CaseEvent.objects.filter(case=original.case, field="status", new_value="waiting").count() == 1


def test_canned_response_is_inserted_above_the_text_with_the_agents_variables(client_for, original):
    template = EmailTemplateFactory(
        text_body="Hello {{ email.sender_name }}, {{ agent.first_name }} here about {{ case.reference }}."
    )
    form = compose(client_for, original).context["form"]
    response = client_for.post(
        reverse("answers:reply", args=[original.pk]),
        {
            "submission_key": form.initial["submission_key"],
            "to": form.initial["to"],
            "body": "\n\n-- \nACME Support team",
            "canned": str(template.pk),
            "insert": "1",
        },
    )
    assert response.status_code == 200
    assert response.context["form"].initial["body"] == (
        f"Hello Ann Customer, Alex here about {original.case.reference}.\n\n\n-- \nACME Support team"
    )
    assert OutboundMessage.objects.count() == 0


def test_rate_limit_refuses_the_answer_over_the_hourly_limit(
    client_for, original, smtp_server, settings, django_capture_on_commit_callbacks
):
    settings.MAILHUB_ANSWERS_PER_USER_PER_HOUR = 1
    send(client_for, original, django_capture_on_commit_callbacks)
    response = send(client_for, original, django_capture_on_commit_callbacks)
    assert response.status_code == 400
    assert "in the last hour" in response.content.decode()
    assert OutboundMessage.objects.count() == 1


def test_attachments_over_the_size_limit_are_refused(client_for, original, settings):
    settings.MAILHUB_ANSWER_MAX_BYTES = 10
    response = submit(client_for, original, uploads=[SimpleUploadedFile("big.bin", b"x" * 11)])
    assert response.status_code == 400
    assert "too large" in response.content.decode()
    assert OutboundMessage.objects.count() == 0


def test_forwarding_an_attachment_of_another_email_is_a_404(client_for, original, mailbox):
    other = AttachmentFactory(email=EmailFactory(mailbox=mailbox))
    response = submit(
        client_for, original, mode="forward", to="x@partner.example", forward_attachments=[str(other.pk)]
    )
    assert response.status_code == 404
    assert OutboundMessage.objects.count() == 0


def test_csrf_is_enforced(agent, original):
    client = Client(enforce_csrf_checks=True)
    client.force_login(agent)
    response = client.post(reverse("answers:reply", args=[original.pk]), {"to": "x@y.example", "send": "1"})
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("method", "name"),
    [
        ("get", "answers:reply"),
        ("get", "answers:reply_all"),
        ("get", "answers:forward"),
        ("post", "answers:reply"),
        ("post", "answers:reply_all"),
        ("post", "answers:forward"),
        ("post", "answers:send_again"),
    ],
)
def test_every_answer_url_is_404_without_access_also_with_access_to_another_mailbox(original, method, name):
    stranger = UserFactory()
    MailboxFactory().authorized_users.add(stranger)
    client = Client()
    client.force_login(stranger)
    url = reverse(name, args=[original.pk])
    response = getattr(client, method)(url, {"to": "x@y.example", "send": "1"} if method == "post" else None)
    assert response.status_code == 404


def test_anonymous_is_sent_to_login(original):
    assert Client().get(reverse("answers:reply", args=[original.pk])).status_code == 302


def test_failed_answer_is_shown_and_can_be_sent_again(
    client_for, original, mailbox, smtp_server, django_capture_on_commit_callbacks
):
    mailbox.smtp_host = ""
    mailbox.save()
    send(client_for, original, django_capture_on_commit_callbacks)
    outbound = OutboundMessage.objects.get()
    assert outbound.status == OutboundStatus.FAILED
    page = client_for.get(outbound.email.get_absolute_url()).content.decode()
    assert "the mailbox has no SMTP server configured" in page
    assert "Send again" in page
    mailbox.smtp_host = smtp_server.host
    mailbox.save()
    with django_capture_on_commit_callbacks(execute=True):
        client_for.post(reverse("answers:send_again", args=[outbound.email.pk]))
    outbound.refresh_from_db()
    assert outbound.status == OutboundStatus.SENT
    assert len(smtp_server.wait_for(1)) == 1


def test_uncertain_answer_needs_the_box_ticked_to_be_sent_again(
    client_for, original, django_capture_on_commit_callbacks
):
    send(client_for, original, django_capture_on_commit_callbacks)
    outbound = OutboundMessage.objects.get()
    OutboundMessage.objects.filter(pk=outbound.pk).update(status=OutboundStatus.UNCERTAIN)
    client_for.post(reverse("answers:send_again", args=[outbound.email.pk]))
    outbound.refresh_from_db()
    assert outbound.status == OutboundStatus.UNCERTAIN


def test_outgoing_email_is_marked_in_the_case_timeline(
    client_for, original, django_capture_on_commit_callbacks
):
    send(client_for, original, django_capture_on_commit_callbacks)
    page = client_for.get(original.case.get_absolute_url()).content.decode()
    assert "<strong>alex</strong> sent" in page
    assert '<span class="badge outbound-sent" data-testid="outbound-status">Sent</span>' in page


def test_a_broker_that_refuses_the_send_task_leaves_the_answer_pending_for_the_next_poll(
    client_for, original, smtp_server, django_capture_on_commit_callbacks, monkeypatch
):
    from kombu.exceptions import OperationalError

    from mailboxes.services.sending import outbounds_due
    from mailhub.tasks import send_outbound

    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(send_outbound, "delay", broker_down)
    response = send(client_for, original, django_capture_on_commit_callbacks)
    assert response.status_code == 302
    outbound = OutboundMessage.objects.get()
    assert outbound.status == OutboundStatus.PENDING
    assert outbounds_due(mailbox_id=original.mailbox_id, created_before=None) == [outbound.pk]
    assert smtp_server.messages == []
