"""An email's page: headers, body (text and sandboxed HTML), images, attachments, thread,
auto-replies and conversions."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import pytest
from django.core import signing
from django.core.files.base import ContentFile
from django.urls import reverse

from mailhub.web.emails.downloads import INLINE_IMAGE_SALT, attachment_content_disposition
from processing.models import Case, Lead
from tests.factories import AttachmentFactory, AutoReplyFactory, CaseFactory, EmailFactory, LeadFactory

from .conftest import PNG_1X1, World

pytestmark = pytest.mark.django_db

HOSTILE_HTML = (
    "<p>Dear customer</p>"
    "<script>window.pwned = 1</script>"
    '<img src="http://tracker.example/pixel.gif" onerror="window.pwned = 2">'
    '<img src="cid:logo@example.com">'
    '<a href="javascript:window.pwned = 3">Click</a>'
    '<div style="width: expression(alert(1)); color: #c00">red</div>'
    '<form action="https://phish.example/"><input name="password"></form>'
)


@pytest.fixture
def reader(world: World):
    return world.users["direct"]


def test_detail_shows_headers_and_defaults_to_the_html_frame(client, world: World, reader):
    email = world.support.email
    email.from_name, email.from_address = "Ann Customer", "ann@customer.example"
    email.to = [["Support", "support@example.com"]]
    email.cc = [["", "boss@customer.example"]]
    email.headers = [["X-Mailer", "Hostile <b>Mailer</b>"]]
    email.save()
    client.force_login(reader)
    page = client.get(reverse("emails:detail", args=[email.pk])).content.decode()
    assert 'Ann Customer <span class="muted">&lt;ann@customer.example&gt;</span>' in page
    assert 'Support <span class="muted">&lt;support@example.com&gt;</span>' in page
    assert "boss@customer.example" in page
    assert "Hostile &lt;b&gt;Mailer&lt;/b&gt;" in page  # header values are escaped
    frame = re.search(r"<iframe [^>]*>", page, re.S).group(0)
    assert f'src="/emails/{email.pk}/body.html"' in frame
    assert 'sandbox="allow-popups allow-popups-to-escape-sandbox"' in frame
    assert "allow-scripts" not in page
    assert "allow-same-origin" not in page


def test_text_view_escapes_and_links(client, world: World, reader):
    email = world.support.email
    email.text_body = "See https://example.com/help <script>alert(1)</script>"
    email.save()
    client.force_login(reader)
    page = client.get(reverse("emails:detail", args=[email.pk]), {"view": "text"}).content.decode()
    assert '<a href="https://example.com/help" rel="nofollow">https://example.com/help</a>' in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<iframe" not in page


def test_email_without_html_shows_text(client, world: World, reader):
    email = world.support.case_email  # the factory's email: text only
    client.force_login(reader)
    page = client.get(reverse("emails:detail", args=[email.pk])).content.decode()
    assert "<iframe" not in page
    assert '<div class="text-body">Hello</div>' in page


def test_html_body_is_sanitized_under_a_strict_csp(client, world: World, reader):
    email = world.support.email
    email.html_body = HOSTILE_HTML
    email.save()
    client.force_login(reader)
    response = client.get(reverse("emails:body_html", args=[email.pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert response["Content-Security-Policy"] == (
        "default-src 'none'; script-src 'none'; object-src 'none'; base-uri 'none'; "
        "form-action 'none'; img-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'self'; "
        "sandbox allow-popups allow-popups-to-escape-sandbox"
    )
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "no-referrer"
    body = response.content.decode().split("<body>", 1)[1]
    # The inline image's token names the reader and the email (it is timestamped: read it back).
    token = unquote(re.search(r"\?t=([^\"]+)", body).group(1))
    assert signing.loads(token, salt=INLINE_IMAGE_SALT) == [reader.pk, email.pk]
    inline_url = f"/emails/{email.pk}/inline/{world.support.inline_image.pk}/?{urlencode({'t': token})}"
    assert body == (
        "<p>Dear customer</p>"
        "<img>"
        f'<img src="{inline_url}">'
        '<a target="_blank" rel="noopener noreferrer">Click</a>'
        '<div style="color: #c00">red</div>'
        "</body></html>"
    )


def test_show_images_allows_remote_images_only_then(client, world: World, reader):
    email = world.support.email
    email.html_body = HOSTILE_HTML
    email.save()
    client.force_login(reader)
    page = client.get(reverse("emails:detail", args=[email.pk])).content.decode()
    assert "1 remote image blocked to protect your privacy." in page
    assert 'href="?view=html&amp;images=1">Show images</a>' in page

    page = client.get(reverse("emails:detail", args=[email.pk]), {"images": "1"}).content.decode()
    assert "remote image blocked" not in page
    assert f'src="/emails/{email.pk}/body.html?images=1"' in page

    response = client.get(reverse("emails:body_html", args=[email.pk]), {"images": "1"})
    assert "img-src 'self' https: http:;" in response["Content-Security-Policy"]
    assert "script-src 'none'" in response["Content-Security-Policy"]
    assert '<img src="http://tracker.example/pixel.gif">' in response.content.decode()


def test_no_banner_without_remote_images(client, world: World, reader):
    client.force_login(reader)
    page = client.get(reverse("emails:detail", args=[world.support.email.pk])).content.decode()
    assert 'data-testid="images-blocked"' not in page


def _inline_url(client, email) -> str:
    body = client.get(reverse("emails:body_html", args=[email.pk])).content.decode()
    return re.search(r'<img src="([^"]+)" alt="logo">', body).group(1).replace("&amp;", "&")


def test_inline_image_is_served_to_the_sandboxed_frame_by_token(client, world: World, reader):
    email = world.support.email
    client.force_login(reader)
    url = _inline_url(client, email)
    client.logout()  # the sandboxed frame sends no session cookie
    response = client.get(url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == PNG_1X1
    assert response["Content-Type"] == "image/png"
    assert response["Content-Disposition"] == "inline"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"


def test_inline_image_token_is_checked(client, world: World, reader):
    support, sales = world.support, world.sales
    token = parse_qs(urlsplit(_signed_url(client, reader, support.email)).query)["t"][0]
    client.logout()
    other_email = reverse("emails:inline_image", args=[sales.email.pk, sales.inline_image.pk])
    # A token is for one email only, and its reader's access is checked again: no Sales image.
    assert client.get(other_email, {"t": token}).status_code == 302  # anonymous: to login
    forged = signing.dumps([world.users["superuser"].pk, sales.email.pk], salt="another salt")
    assert client.get(other_email, {"t": forged}).status_code == 302
    revoked = signing.dumps([reader.pk, sales.email.pk], salt=INLINE_IMAGE_SALT)
    assert client.get(other_email, {"t": revoked}).status_code == 404  # valid, but no access
    # Access revoked after the token was made: the image is refused.
    support.mailbox.authorized_users.remove(reader)
    own = reverse("emails:inline_image", args=[support.email.pk, support.inline_image.pk])
    assert client.get(own, {"t": token}).status_code == 404


def _signed_url(client, user, email) -> str:
    client.force_login(user)
    return _inline_url(client, email)


def test_inline_image_refuses_non_images(client, world: World, reader):
    email = world.support.email
    client.force_login(reader)
    url = reverse("emails:inline_image", args=[email.pk, world.support.attachment.pk])  # a PDF
    assert client.get(url).status_code == 404


@pytest.mark.parametrize(
    ("filename", "declared", "disposition", "content_type"),
    [
        (
            "report.pdf",
            "application/pdf",
            "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf",
            "application/pdf",
        ),
        (
            'evil"\r\nX: y.html',
            "text/html",
            "attachment; filename=\"evil___X: y.html\"; filename*=UTF-8''evil%22__X%3A%20y.html",
            "application/octet-stream",
        ),
        (
            "Résumé 2026 €.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document; name=x",
            'attachment; filename="Resume 2026 .docx"; '
            "filename*=UTF-8''R%C3%A9sum%C3%A9%202026%20%E2%82%AC.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        (
            "../../etc/passwd",
            "image/svg+xml",
            "attachment; filename=\"_.._etc_passwd\"; filename*=UTF-8''_.._etc_passwd",
            "application/octet-stream",
        ),
        (
            "",
            "",
            "attachment; filename=\"attachment\"; filename*=UTF-8''attachment",
            "application/octet-stream",
        ),
    ],
)
def test_attachment_download_headers(
    client, world: World, reader, filename, declared, disposition, content_type
):
    attachment = AttachmentFactory(
        email=world.support.email,
        filename=filename,
        content_type=declared,
        file=ContentFile(b"<script>alert(1)</script>", name="x.bin"),
    )
    client.force_login(reader)
    response = client.get(reverse("emails:attachment", args=[world.support.email.pk, attachment.pk]))
    assert response.status_code == 200
    assert response["Content-Disposition"] == disposition
    assert response["Content-Type"] == content_type
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert b"".join(response.streaming_content) == b"<script>alert(1)</script>"


def test_content_disposition_never_contains_a_line_break():
    header = attachment_content_disposition("a\r\nSet-Cookie: x=1\x00\x7f.txt")
    assert "\r" not in header
    assert "\n" not in header
    assert header == (
        "attachment; filename=\"a__Set-Cookie: x=1__.txt\"; filename*=UTF-8''a__Set-Cookie%3A%20x%3D1__.txt"
    )


def test_attachment_whose_file_is_missing_is_404(client, world: World, reader):
    attachment = world.support.attachment
    attachment.file.storage.delete(attachment.file.name)
    client.force_login(reader)
    url = reverse("emails:attachment", args=[world.support.email.pk, attachment.pk])
    assert client.get(url).status_code == 404


def test_original_is_the_raw_message_as_a_download(client, world: World, reader):
    email = world.support.email
    with email.raw.open("rb") as stored:
        raw = stored.read()
    client.force_login(reader)
    response = client.get(reverse("emails:original", args=[email.pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == "message/rfc822"
    assert response["Content-Disposition"] == (
        f"attachment; filename=\"email-{email.pk}.eml\"; filename*=UTF-8''email-{email.pk}.eml"
    )
    assert response["X-Content-Type-Options"] == "nosniff"
    assert b"".join(response.streaming_content) == raw


def test_original_whose_file_is_missing_is_404(client, world: World, reader):
    email = world.support.email
    email.raw.storage.delete(email.raw.name)
    client.force_login(reader)
    assert client.get(reverse("emails:original", args=[email.pk])).status_code == 404


def test_attachment_of_another_email_is_404(client, world: World, reader):
    client.force_login(reader)
    # The attachment exists and is visible, but not under this email's URL.
    url = reverse("emails:attachment", args=[world.support.case_email.pk, world.support.attachment.pk])
    assert client.get(url).status_code == 404


def test_detail_lists_attachments_thread_and_auto_replies(client, world: World, reader):
    mailbox = world.support.mailbox
    first = EmailFactory(mailbox=mailbox, message_id="<first@customer.example>", subject="First")
    second = EmailFactory(
        mailbox=mailbox,
        message_id="<second@customer.example>",
        in_reply_to="<first@customer.example>",
        references="<first@customer.example>",
        subject="Second",
    )
    reply = EmailFactory(mailbox=mailbox, in_reply_to="<second@customer.example>", subject="Third")
    EmailFactory(mailbox=world.sales.mailbox, in_reply_to="<second@customer.example>", subject="Elsewhere")
    AutoReplyFactory(email=second, rule_name="Thanks", status="sent", recipient="ann@customer.example")
    AutoReplyFactory(
        email=second, rule_name="Holiday", status="suppressed", reason="Auto-Submitted: auto-replied"
    )
    client.force_login(reader)
    page = client.get(reverse("emails:detail", args=[second.pk])).content.decode()
    thread = re.findall(r'<li>\s*<a href="/emails/(\d+)/">', page)
    assert thread == [str(first.pk), str(reply.pk)]
    assert '<span class="badge sent">Sent</span> Thanks' in page
    assert '<span class="badge suppressed">Suppressed</span> Holiday' in page
    assert "Auto-Submitted: auto-replied" in page


def test_thread_of_a_case_is_its_emails(client, world: World, reader):
    case = world.support.case
    other = EmailFactory(mailbox=world.support.mailbox, case=case, subject="Follow-up")
    client.force_login(reader)
    page = client.get(reverse("emails:detail", args=[world.support.case_email.pk])).content.decode()
    assert re.findall(r'<li>\s*<a href="/emails/(\d+)/">', page) == [str(other.pk)]
    assert f'href="/cases/{case.pk}/">Case #{case.number} · Open</a>' in page
    assert "Convert to case" not in page
    assert "Convert to lead" not in page


@pytest.mark.parametrize(("action", "model"), [("convert_to_case", Case), ("convert_to_lead", Lead)])
def test_convert(client, world: World, reader, action, model):
    email = world.support.email
    client.force_login(reader)
    page = client.get(reverse("emails:detail", args=[email.pk])).content.decode()
    assert f'action="/emails/{email.pk}/convert-to-{action[11:]}/"' in page
    response = client.post(reverse(f"emails:{action}", args=[email.pk]))
    created = model.objects.get(source_email=email)
    assert response.status_code == 302
    assert response["Location"] == created.get_absolute_url()
    # Converting again answers with the same object, not a second one.
    assert client.post(reverse(f"emails:{action}", args=[email.pk]))["Location"] == created.get_absolute_url()
    assert model.objects.filter(source_email=email).count() == 1


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("convert_to_case", "Not converted to a case: this email already belongs to a lead."),
        ("convert_to_lead", "Not converted to a lead: this email already belongs to a case."),
    ],
)
def test_refused_conversion_shows_a_message(client, world: World, reader, action, message):
    email = world.support.lead_email if action == "convert_to_case" else world.support.case_email
    client.force_login(reader)
    response = client.post(reverse(f"emails:{action}", args=[email.pk]), follow=True)
    assert response.redirect_chain == [(f"/emails/{email.pk}/", 302)]
    assert f'<li class="error">{message}</li>' in response.content.decode()


def test_conversion_needs_post(client, world: World, reader):
    client.force_login(reader)
    assert client.get(reverse("emails:convert_to_case", args=[world.support.email.pk])).status_code == 405


def test_conversion_needs_csrf(world: World, reader):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(reader)
    assert client.post(reverse("emails:convert_to_case", args=[world.support.email.pk])).status_code == 403
    assert Case.objects.filter(source_email=world.support.email).count() == 0


def test_lead_and_case_pages_list_their_emails(client, world: World, reader):
    client.force_login(reader)
    lead_page = client.get(reverse("leads:detail", args=[world.support.lead.pk])).content.decode()
    assert re.findall(r'href="/emails/(\d+)/"', lead_page) == [str(world.support.lead_email.pk)]
    case_page = client.get(reverse("cases:detail", args=[world.support.case.pk])).content.decode()
    assert re.findall(r'href="/emails/(\d+)/"', case_page) == [str(world.support.case_email.pk)]


def test_lead_owner_and_case_links_from_the_grid(client, world: World, reader):
    client.force_login(reader)
    page = client.get(reverse("emails:list")).content.decode()
    case = world.support.case
    assert f'<a class="badge case" href="/cases/{case.pk}/">Case #{case.number}</a>' in page
    assert (
        f'<a class="badge lead" href="/leads/{world.support.lead.pk}/" title="Support lead">Lead</a>' in page
    )


def test_other_mailbox_lead_and_case_factories_stay_separate(world: World):
    # Guard of the fixture itself: the matrix relies on each mailbox owning its objects.
    assert {world.support.case.mailbox_id, world.support.lead.mailbox_id} == {world.support.mailbox.pk}
    assert LeadFactory._meta.model is Lead
    assert CaseFactory._meta.model is Case
