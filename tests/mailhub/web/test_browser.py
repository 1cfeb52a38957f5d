"""The staff pages in a real browser: headless Chromium driven by Playwright against the live
server. Screenshots go to test-artifacts/ (gitignored) for a human look."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from tests.factories import (
    AttachmentFactory,
    CaseFactory,
    EmailFactory,
    LeadFactory,
    MailboxFactory,
    UserFactory,
)

from .conftest import PNG_1X1

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
PDF_BYTES = b"%PDF-1.4\n% mailhub test attachment\n"


class RecordingServer:
    """A plain HTTP server on 127.0.0.1 that records every request: the "remote" image host."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                recorder.requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(PNG_1X1)))
                self.end_headers()
                self.wfile.write(PNG_1X1)

            do_POST = do_GET

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RecordingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def remote_host() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


def log_in(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/emails/")
    assert page.url == f"{live_server.url}/accounts/login/?next=/emails/"
    page.fill("#id_username", username)
    page.fill("#id_password", "pw")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/emails/")


def grid_ids(page) -> list[int]:
    return [
        int(pk)
        for pk in page.eval_on_selector_all("tr[data-email-id]", "rows => rows.map(r => r.dataset.emailId)")
    ]


def test_pick_a_mailbox_open_an_email_download_its_attachment(browser, live_server):
    user = UserFactory(username="dana", first_name="Dana", last_name="Scully")
    support = MailboxFactory(label="Support")
    sales = MailboxFactory(label="Sales")
    hidden = MailboxFactory(label="Board")  # not granted: never listed
    support.authorized_users.add(user)
    sales.authorized_users.add(user)
    now = timezone.now()
    customers = [
        (
            "Ann Lee",
            "ann@customer.example",
            "Order 1042 arrived damaged",
            "The box was crushed and the lamp is broken.",
        ),
        ("Bob Stone", "bob@stone.example", "Invoice question", "Could you resend the invoice for March?"),
        ("Chloé Martin", "chloe@martin.example", "Réclamation livraison", "Le colis n'est jamais arrivé."),
        ("Dev Patel", "dev@patel.example", "Password reset not working", "I never receive the reset email."),
        ("Eve Adams", "eve@adams.example", "Thanks for the quick help!", "All good now, thank you."),
    ]
    support_emails = []
    for n, (name, address, subject, body) in enumerate(customers):
        support_emails.append(
            EmailFactory(
                mailbox=support,
                from_name=name,
                from_address=address,
                subject=subject,
                text_body=body,
                received_at=now - timedelta(hours=n * 5),
                has_attachments=n == 1,
            )
        )
    support_emails[0].case = CaseFactory(mailbox=support, subject="Order 1042 arrived damaged")
    support_emails[0].save()
    support_emails[4].lead = LeadFactory(mailbox=support, name="Eve Adams")
    support_emails[4].save()
    sales_emails = [
        EmailFactory(
            mailbox=sales,
            from_name="Frank Miller",
            from_address="frank@miller.example",
            subject="Quote for 40 seats",
            text_body="We would like a quote for 40 seats, yearly billing. Attached our requirements.",
            html_body="<h2>Quote request</h2>"
            "<p>We would like a quote for <b>40 seats</b>, yearly billing.</p>",
            received_at=now - timedelta(minutes=30),
            has_attachments=True,
            to=[["Sales", "sales@example.com"]],
        ),
        EmailFactory(
            mailbox=sales,
            from_name="Grace Hopper",
            from_address="grace@navy.example",
            subject="Partnership",
            text_body="Let us talk about a partnership.",
            received_at=now - timedelta(days=3),
        ),
    ]
    attachment = AttachmentFactory(
        email=sales_emails[0],
        filename="requirements 2026.pdf",
        content_type="application/pdf",
        size=len(PDF_BYTES),
        file=ContentFile(PDF_BYTES, name="requirements.pdf"),
    )
    EmailFactory(mailbox=hidden, subject="Board only")
    ARTIFACTS.mkdir(exist_ok=True)

    context = browser.new_context(viewport={"width": 1360, "height": 860})
    page = context.new_page()
    page.goto(f"{live_server.url}/accounts/login/")
    page.screenshot(path=str(ARTIFACTS / "login.png"))
    log_in(page, live_server, "dana")
    assert page.inner_text('[data-testid="current-view"]') == "All my mailboxes"
    assert sorted(grid_ids(page)) == sorted(e.pk for e in support_emails + sales_emails)

    # The view selector, top left: its menu lists "All" and exactly the granted mailboxes.
    selector = page.locator("details.view-selector")
    box = selector.bounding_box()
    assert box["x"] < 60
    assert box["y"] < 140
    selector.locator("summary").click()
    options = page.locator(".view-menu button > span:first-child").all_inner_texts()
    assert options == ["All my mailboxes", "Sales", "Support"]
    page.screenshot(path=str(ARTIFACTS / "emails-view-selector.png"))
    page.locator(".view-menu button", has_text="Sales").click()
    page.wait_for_url(f"{live_server.url}/emails/")
    assert page.inner_text('[data-testid="current-view"]') == "Sales"
    assert grid_ids(page) == [e.pk for e in sales_emails]

    # The choice survives a new session (it is stored in the database).
    context.close()
    context = browser.new_context(viewport={"width": 1360, "height": 860})
    page = context.new_page()
    log_in(page, live_server, "dana")
    assert page.inner_text('[data-testid="current-view"]') == "Sales"
    page.locator(".view-selector summary").click()
    page.locator(".view-menu button", has_text="Support").click()
    page.wait_for_url(f"{live_server.url}/emails/")
    assert grid_ids(page) == [e.pk for e in support_emails]
    page.screenshot(path=str(ARTIFACTS / "emails-grid.png"), full_page=True)

    page.locator(".view-selector summary").click()
    page.locator(".view-menu button", has_text="Sales").click()
    page.wait_for_url(f"{live_server.url}/emails/")
    page.click(f'tr[data-email-id="{sales_emails[0].pk}"] .subject-line a')
    page.wait_for_url(f"{live_server.url}/emails/{sales_emails[0].pk}/")
    assert page.inner_text("h1") == "Quote for 40 seats"
    frame = page.frame_locator("iframe.email-frame")
    assert frame.locator("h2").inner_text() == "Quote request"
    page.screenshot(path=str(ARTIFACTS / "email-detail.png"), full_page=True)

    with page.expect_download() as download_info:
        page.click(f'a[href="/emails/{sales_emails[0].pk}/attachments/{attachment.pk}/"]')
    download = download_info.value
    assert download.suggested_filename == "requirements 2026.pdf"
    assert Path(download.path()).read_bytes() == PDF_BYTES
    context.close()


def hostile_html(remote: str) -> str:
    return f"""
<html><head>
  <meta http-equiv="refresh" content="0;url={remote}/refresh">
  <link rel="stylesheet" href="{remote}/style.css">
  <style>@import url({remote}/import.css); body {{ background: url({remote}/background.png) }}</style>
  <script>window.pwned = "head script"; alert("head");</script>
</head>
<body onload="window.pwned = 'onload'; alert('onload')">
  <h1>Your invoice</h1>
  <p>Please find your invoice below.</p>
  <img src="{remote}/pixel.png" width="1" height="1" alt="">
  <img src="x" onerror="window.pwned = 'onerror'; alert('onerror')" alt="broken">
  <img src="cid:logo@example.com" alt="logo" id="logo">
  <p><a id="js-link" href="javascript:window.top.pwned='link';alert('link')">Pay now</a></p>
  <div style="width: expression(alert('css')); background-image: url({remote}/css-image.png); color: #b00">
    Styled text
  </div>
  <svg onload="alert('svg')"><script>alert('svg script')</script></svg>
  <iframe src="{remote}/frame"></iframe>
  <object data="{remote}/object"></object>
  <form action="{remote}/form" method="post"><input name="password" value="secret">
    <button id="submit" type="submit">Log in to pay</button></form>
</body></html>
"""


def test_hostile_email_runs_nothing_and_loads_nothing_until_asked(browser, live_server, remote_host):
    user = UserFactory(username="dana")
    mailbox = MailboxFactory(label="Support")
    mailbox.authorized_users.add(user)
    email = EmailFactory(
        mailbox=mailbox,
        from_name="Mallory",
        from_address="mallory@evil.example",
        subject="Invoice overdue: pay now",
        text_body="Your invoice is overdue.",
        html_body=hostile_html(remote_host.url),
    )
    inline = AttachmentFactory(
        email=email,
        filename="logo.png",
        content_type="image/png",
        content_id="logo@example.com",
        is_inline=True,
        file=ContentFile(PNG_1X1, name="logo.png"),
    )
    ARTIFACTS.mkdir(exist_ok=True)

    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    dialogs, console_errors, page_errors, requests = [], [], [], []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on(
        "console", lambda message: console_errors.append(message.text) if message.type == "error" else None
    )
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))
    inline_responses = []
    page.on(
        "response", lambda r: inline_responses.append(r.status) if f"/inline/{inline.pk}/" in r.url else None
    )

    log_in(page, live_server, "dana")
    page.goto(f"{live_server.url}/emails/{email.pk}/")
    frame_element = page.wait_for_selector("iframe.email-frame")
    assert frame_element.get_attribute("sandbox") == "allow-popups allow-popups-to-escape-sandbox"
    frame = frame_element.content_frame()
    frame.wait_for_load_state("load")
    page.wait_for_load_state("networkidle")
    # Loaded, and nothing of the email ran or was fetched: a surviving <script>, on* handler or
    # javascript: URL would have logged "Blocked script execution" (the sandbox), a remote
    # stylesheet, frame or image would have reached the recording server.
    assert dialogs == []
    assert page_errors == []
    assert console_errors == []
    assert remote_host.requests == []
    assert [url for url in requests if url.startswith(remote_host.url)] == []
    assert frame.inner_text("h1") == "Your invoice"
    assert (
        page.inner_text('[data-testid="images-blocked"] span')
        == "1 remote image blocked to protect your privacy."
    )
    hostile = "body :is(form, input, button, script, iframe, object, svg, style, link, meta, base)"
    assert frame.locator(hostile).count() == 0
    assert frame.locator("head script, head link, head base").count() == 0

    # The inline (cid:) image is shown: fetched from mailhub with the frame's token, and decoded
    # (a broken image would be drawn as its alt text, not as 1x1 pixel).
    assert inline_responses == [200]
    logo = frame.locator("img[alt=logo]").bounding_box()
    assert (logo["width"], logo["height"]) == (1, 1)

    # A real click on the (formerly javascript:) link: nothing runs, nothing is fetched.
    link = frame.locator("text=Pay now").bounding_box()
    page.mouse.click(link["x"] + link["width"] / 2, link["y"] + link["height"] / 2)
    page.wait_for_timeout(300)
    page.wait_for_load_state("networkidle")
    assert dialogs == []
    assert page_errors == []
    # Playwright's own helpers (bounding_box) live in the frame's main world, where the sandbox
    # blocks them on every mouse event with "Blocked script execution": those are the harness's,
    # not the email's (checked to be none above, before any helper was injected).
    assert [text for text in console_errors if not text.startswith("Blocked script execution in")] == []
    assert remote_host.requests == []
    assert page.url == f"{live_server.url}/emails/{email.pk}/"
    assert len(context.pages) == 1
    assert page.evaluate("() => window.pwned") is None
    assert frame.evaluate("() => window.pwned") is None
    page.screenshot(path=str(ARTIFACTS / "email-hostile-blocked.png"), full_page=True)

    console_errors.clear()
    page.click("text=Show images")
    page.wait_for_url(f"{live_server.url}/emails/{email.pk}/?view=html&images=1")
    frame = page.wait_for_selector("iframe.email-frame").content_frame()
    frame.wait_for_load_state("load")
    page.wait_for_load_state("networkidle")
    # Now the remote image, and only it, is fetched: not the CSS, frame, object or form targets.
    assert remote_host.requests == ["/pixel.png"]
    assert dialogs == []
    assert page_errors == []
    assert console_errors == []
    pixel = frame.locator(f'img[src="{remote_host.url}/pixel.png"]').bounding_box()
    assert (pixel["width"], pixel["height"]) == (1, 1)
    assert page.evaluate("() => window.pwned") is None
    page.screenshot(path=str(ARTIFACTS / "email-hostile-images-shown.png"), full_page=True)
    context.close()


def test_case_page_in_the_browser(browser, live_server):
    user = UserFactory(username="dana")
    colleague = UserFactory(username="gus")
    mailbox = MailboxFactory(label="Support")
    mailbox.authorized_users.add(user, colleague)
    LeadFactory(
        mailbox=mailbox, name="Big Corp", email="buyer@bigcorp.example", subject="40 seats", owner=user
    )
    case = CaseFactory(
        mailbox=mailbox, subject="Printer on fire", reporter_name="Ann Lee", description="It smokes."
    )
    EmailFactory(
        mailbox=mailbox, case=case, subject="Printer on fire", from_name="Ann Lee", text_body="It smokes."
    )
    context = browser.new_context(viewport={"width": 1360, "height": 860})
    page = context.new_page()
    log_in(page, live_server, "dana")
    page.goto(f"{live_server.url}/cases/{case.pk}/")
    page.select_option("select[name=status]", "resolved")
    page.select_option("select[name=priority]", "urgent")
    page.select_option("select[name=assignee]", label="gus")
    page.click("text=Save changes")
    page.wait_for_url(f"{live_server.url}/cases/{case.pk}/")
    assert page.inner_text('[data-testid="case-status"]') == "Resolved"
    history = page.locator('[data-testid="case-timeline"] li[data-kind="event"]').all_inner_texts()
    assert [line.splitlines()[0] for line in history] == [
        "dana changed status from Open to Resolved",
        "dana changed priority from Normal to Urgent",
        "dana changed assignee from nobody to gus",
    ]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "case-detail.png"), full_page=True)
    page.goto(f"{live_server.url}/cases/")
    page.screenshot(path=str(ARTIFACTS / "cases-list.png"), full_page=True)
    page.goto(f"{live_server.url}/leads/")
    assert page.locator("tr[data-lead-id]").count() == 1
    page.screenshot(path=str(ARTIFACTS / "leads-list.png"), full_page=True)
    context.close()
