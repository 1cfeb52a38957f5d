"""Pages stay bounded whatever was stored: an email with 1,000 attachments and a 5 MB text body,
a case with hundreds of emails, subjects of a megabyte. Storing caps these too; the pages must
not depend on it (rows stored before a cap, an admin import, a bug).

The limit asserted for the email page, 1.5 MB, is the displayed text (1,000,000 characters,
TEXT_BODY_SHOWN) plus 200 attachment rows and the page's frame; without the bounds the same page
was over 5 MB here (and 20 MB for the 100,000-part message of the issue).
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from mailboxes.models import Attachment
from mailhub.web.emails.email_page import ATTACHMENTS_SHOWN, EMAILS_PER_RECORD_PAGE, TEXT_BODY_SHOWN
from tests.factories import CaseFactory, EmailFactory, LeadFactory, MailboxFactory, UserFactory

pytestmark = pytest.mark.django_db

EMAIL_PAGE_LIMIT = 1_500_000
LIST_PAGE_LIMIT = 300_000
FIVE_MB_TEXT = "word " * 1_000_000 + "THE-LAST-WORD"


@pytest.fixture
def reader(client):
    user = UserFactory()
    mailbox = MailboxFactory()
    mailbox.authorized_users.add(user)
    client.force_login(user)
    return mailbox


@pytest.fixture
def huge_email(reader):
    email = EmailFactory(mailbox=reader, text_body=FIVE_MB_TEXT, html_body="", has_attachments=True)
    Attachment.objects.bulk_create(
        Attachment(email=email, filename=f"part-{n:04}.txt", content_type="text/plain", size=1, file=f"a/{n}")
        for n in range(1_000)
    )
    return email


def test_email_page_of_1000_attachments_and_a_5_mb_text_is_bounded(client, huge_email):
    response = client.get(reverse("emails:detail", args=[huge_email.pk]))
    page = response.content.decode()
    assert response.status_code == 200
    assert len(response.content) < EMAIL_PAGE_LIMIT
    assert "part-0199.txt" in page
    assert "part-0200.txt" not in page
    assert page.count('data-testid="attachments-not-shown"') == 1
    assert f"and {1_000 - ATTACHMENTS_SHOWN} more" in page
    assert "THE-LAST-WORD" not in page
    assert f"only its first {TEXT_BODY_SHOWN} of {len(FIVE_MB_TEXT)} characters are shown" in page
    assert page.count(reverse("emails:original", args=[huge_email.pk])) == 3  # header, text, list


def test_email_page_never_loads_the_whole_text_body(client, huge_email):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        assert client.get(reverse("emails:detail", args=[huge_email.pk])).status_code == 200
    reads = [q["sql"] for q in queries.captured_queries if '"text_body"' in q["sql"]]
    assert len(reads) == 1
    assert "SUBSTR" in reads[0].upper()


def test_short_text_is_shown_whole_without_a_note(client, reader):
    email = EmailFactory(mailbox=reader, text_body="short and sweet", html_body="")
    page = client.get(reverse("emails:detail", args=[email.pk])).content.decode()
    assert "short and sweet" in page
    assert 'data-testid="text-cut"' not in page
    assert 'data-testid="attachments-not-shown"' not in page


def test_inline_images_of_the_frame_are_bounded(client, reader):
    html = "".join(f'<img src="cid:img{n}@x">' for n in range(300))
    email = EmailFactory(mailbox=reader, html_body=html)
    Attachment.objects.bulk_create(
        Attachment(
            email=email, filename=f"{n}.png", content_type="image/png", file=f"i/{n}", content_id=f"img{n}@x"
        )
        for n in range(300)
    )
    body = client.get(reverse("emails:body_html", args=[email.pk])).content.decode()
    assert body.count("/inline/") == 200


def test_lead_page_shows_its_emails_a_page_at_a_time(client, reader):
    """(A case's page pages its timeline by keyset: tests/mailhub/web/test_case_timeline.py.)"""
    record = LeadFactory(mailbox=reader)
    for n in range(EMAILS_PER_RECORD_PAGE + 7):
        EmailFactory(mailbox=reader, subject=f"reply {n:03}", lead=record)
    first = client.get(record.get_absolute_url())
    last = client.get(record.get_absolute_url(), {"page": "2"})
    assert (first.status_code, last.status_code) == (200, 200)
    assert first.content.decode().count("reply 0") == EMAILS_PER_RECORD_PAGE
    assert "reply 049" in first.content.decode()
    assert "reply 050" not in first.content.decode()
    assert last.content.decode().count("reply 0") == 7
    assert "Page 2 of 2" in last.content.decode()
    assert client.get(record.get_absolute_url(), {"page": "99999999999999999999"}).status_code == 200


@pytest.mark.parametrize("url_name", ["emails:list", "cases:list", "leads:list"])
def test_lists_of_megabyte_subjects_are_bounded(client, reader, url_name):
    subject = "S" * 1_000_000
    for _ in range(20):
        email = EmailFactory(mailbox=reader, subject=subject, text_body=FIVE_MB_TEXT)
        CaseFactory(mailbox=reader, subject=subject, source_email=email)
        LeadFactory(mailbox=reader, subject=subject)
    response = client.get(reverse(url_name))
    assert response.status_code == 200
    assert len(response.content) < LIST_PAGE_LIMIT


def test_case_page_of_megabyte_subjects_is_bounded(client, reader):
    subject = "S" * 1_000_000
    case = CaseFactory(
        mailbox=reader, subject=subject, previous_case=CaseFactory(mailbox=reader, subject=subject)
    )
    for _ in range(20):
        EmailFactory(mailbox=reader, subject=subject, case=case)
    response = client.get(case.get_absolute_url())
    assert response.status_code == 200
    assert len(response.content) < LIST_PAGE_LIMIT
