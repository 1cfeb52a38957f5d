"""Answering in a real browser: headless Chromium (Playwright) against the live server, with the
real Dovecot (the customer's email arrives there, the Sent copy lands there) and the real SMTP
server. Screenshots go to test-artifacts/."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from mailboxes.models import Email, EmailDirection, OutboundMessage, OutboundStatus
from processing.models import Case, Note
from tests.factories import EmailTemplateFactory, MailboxFactory, UserFactory

from .test_browser import ARTIFACTS, log_in

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

QUESTION = (
    b"From: Ann Customer <ann@customer.example>\r\nTo: support@acme.example\r\n"
    b"Subject: Printer broken\r\nMessage-ID: <q1@customer.example>\r\n"
    b"Date: Mon, 2 Nov 2026 10:00:00 +0000\r\n\r\nThe printer is broken.\r\nPlease help.\r\n"
)


def test_an_agent_answers_with_a_canned_response_and_the_signature_then_adds_a_note(
    browser, live_server, imap_account, smtp_server, settings
):
    settings.CELERY_TASK_ALWAYS_EAGER = True  # the send runs when the answer's transaction commits
    mailbox = MailboxFactory.on_dovecot(
        imap_account,
        email="support@acme.example",
        label="Support",
        sender_name="Alex from Support",
        signature="Alex, ACME Support",
        smtp_host=smtp_server.host,
        smtp_port=smtp_server.port,
        smtp_security="none",
        smtp_username="",
        processing_action="case",
        history_import="none",
    )
    agent = UserFactory(username="alex", first_name="Alex")
    mailbox.authorized_users.add(agent)
    EmailTemplateFactory(
        name="Printer fix",
        subject="unused",
        text_body="Hello {{ email.sender_name }}, case {{ case.reference }}: "
        "please restart the printer. {{ agent.first_name }}",
    )
    call_command("poll_mailboxes", "--mailbox", str(mailbox.pk))  # first contact
    imap_account.append(QUESTION)
    call_command("poll_mailboxes", "--mailbox", str(mailbox.pk))
    case = Case.objects.get()
    original = case.emails.get()

    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    log_in(page, live_server, "alex")
    page.goto(f"{live_server.url}/emails/{original.pk}/")
    page.click("text=Reply")
    page.wait_for_url(f"{live_server.url}/emails/{original.pk}/reply/")
    assert page.input_value("textarea[name=body]").endswith("-- \nAlex, ACME Support")
    page.select_option("select[name=canned]", label="Printer fix")
    page.click("button[name=insert]")
    page.wait_for_selector("textarea[name=body]")
    body = page.input_value("textarea[name=body]")
    assert f"Hello Ann Customer, case {case.reference}: please restart the printer. Alex" in body
    assert body.endswith("-- \nAlex, ACME Support")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "answer-compose.png"), full_page=True)
    page.click("button[name=send]")
    page.wait_for_url(f"{live_server.url}/emails/{original.pk}/")

    [received] = smtp_server.wait_for(1)
    assert received.message["From"] == "Alex from Support <support@acme.example>"
    assert received.message["Subject"] == f"Re: [{case.reference}] Printer broken"
    text = received.message.get_body(("plain",)).get_content()
    assert "please restart the printer" in text
    assert "Alex, ACME Support" in text
    assert "> The printer is broken." in text
    assert OutboundMessage.objects.get().status == OutboundStatus.SENT

    page.goto(f"{live_server.url}/cases/{case.pk}/?latest=1")
    entries = page.locator('[data-testid="case-timeline"] li[data-kind="email"]').all_inner_texts()
    assert len(entries) == 2
    assert entries[1].startswith("alex sent")
    assert "Sent" in entries[1]
    assert f"Re: [{case.reference}] Printer broken" in entries[1]

    page.fill("textarea[name=body]", "Customer called: printer is a Model X-200.")
    page.click("text=Add note")
    page.wait_for_selector('[data-testid="case-timeline"] li[data-kind="note"]')
    note = page.locator('[data-testid="case-timeline"] li[data-kind="note"]').inner_text()
    assert "alex added an internal note" in note
    assert "Model X-200" in note
    page.screenshot(path=str(ARTIFACTS / "answer-case-timeline.png"), full_page=True)
    context.close()

    assert Note.objects.get().case_id == case.pk
    assert len(smtp_server.messages) == 1  # the note was never emailed
    assert Email.objects.filter(direction=EmailDirection.OUTGOING).count() == 1
