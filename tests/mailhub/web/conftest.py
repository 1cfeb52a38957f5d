"""Fixtures of the staff pages: a small world of two mailboxes and one user per kind of access,
and a headless Chromium for the browser tests."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.core.files.base import ContentFile

from mailboxes.models import Attachment, Email, Mailbox
from processing.models import Case, Lead
from tests.factories import (
    AttachmentFactory,
    CaseFactory,
    EmailFactory,
    GroupFactory,
    LeadFactory,
    MailboxFactory,
    UserFactory,
)
from tests.servers.common import require_binary

# A 1x1 red PNG: a real image, so a browser really decodes it.
PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


@dataclass
class MailboxObjects:
    mailbox: Mailbox
    email: Email  # with an attachment and an inline image
    attachment: Attachment
    inline_image: Attachment
    lead_email: Email  # an email of `lead`
    lead: Lead
    case_email: Email  # an email of `case`
    case: Case


@dataclass
class World:
    support: MailboxObjects  # granted to `direct` (user) and to `group` (through a group)
    sales: MailboxObjects  # granted to nobody: only superusers see it
    users: dict  # superuser, direct, group, none


def mailbox_objects(mailbox: Mailbox, name: str) -> MailboxObjects:
    email = EmailFactory(
        mailbox=mailbox,
        subject=f"{name} question",
        text_body=f"Hello from {name}",
        html_body='<p>Logo: <img src="cid:logo@example.com" alt="logo"></p>',
        has_attachments=True,
    )
    attachment = AttachmentFactory(email=email)
    inline_image = AttachmentFactory(
        email=email,
        filename="logo.png",
        content_type="image/png",
        size=len(PNG_1X1),
        content_id="logo@example.com",
        is_inline=True,
        file=ContentFile(PNG_1X1, name="logo.png"),
    )
    lead = LeadFactory(mailbox=mailbox, name=f"{name} lead")
    lead_email = EmailFactory(mailbox=mailbox, subject=f"{name} lead email", lead=lead)
    case = CaseFactory(mailbox=mailbox, subject=f"{name} case")
    case_email = EmailFactory(mailbox=mailbox, subject=f"{name} case email", case=case)
    return MailboxObjects(mailbox, email, attachment, inline_image, lead_email, lead, case_email, case)


@pytest.fixture
def world(db) -> World:
    role = GroupFactory(name="support-team")
    support = MailboxFactory(label="Support")
    sales = MailboxFactory(label="Sales")
    users = {
        "superuser": UserFactory(username="root", is_superuser=True, is_staff=True),
        "direct": UserFactory(username="dana"),
        "group": UserFactory(username="gus", groups=[role]),
        "none": UserFactory(username="nora"),
    }
    support.authorized_users.add(users["direct"])
    support.authorized_groups.add(role)
    return World(
        support=mailbox_objects(support, "Support"), sales=mailbox_objects(sales, "Sales"), users=users
    )


@pytest.fixture
def browser(monkeypatch) -> Iterator:
    """A headless Chromium (Playwright, sync API) for one test.

    Playwright's sync API keeps an event loop running in this thread, which Django takes for an
    async context: ORM calls of the test itself (factories, assertions) are allowed explicitly.
    The live server answers from its own thread.
    """
    executable = require_binary(CHROMIUM, "chromium")
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
