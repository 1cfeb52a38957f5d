"""The OAuth2 connect flow of the admin in a real browser: headless Chromium logs in as a
superuser, presses Connect on a mailbox whose connection points at the local identity provider
(127.0.0.1, auto-approving), follows its redirect back to the live server's callback, sees who was
connected; a poll over Dovecot's XOAUTH2/OAUTHBEARER then works; a revoked grant shows
"Needs to be reconnected" and Reconnect brings the mailbox back. Screenshots in test-artifacts/."""

from __future__ import annotations

import urllib.parse
import uuid
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from mailboxes.oauth_models import AuthMethod, GrantStatus, OAuthGrant, OAuthProvider
from mailboxes.services import mailbox_poll
from mailhub.status import MailboxState, mailbox_statuses
from tests.factories import MailboxFactory, UserFactory
from tests.servers import LocalOAuthServer
from tests.servers.oauth import CLIENT_ID, CLIENT_SECRET

from .test_browser import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _message(n: int, to: str) -> bytes:
    return (
        f"From: Customer <customer{n}@example.test>\r\nTo: {to}\r\nSubject: Question {n}\r\n"
        f"Message-ID: <b{n}-{uuid.uuid4().hex}@example.test>\r\n\r\nHello {n}\r\n"
    ).encode()


def _admin_log_in(page, live_server) -> None:
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "root")
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")


def _authorize_requests(requests: list[str], idp: LocalOAuthServer) -> list[dict[str, str]]:
    return [
        dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        for url in requests
        if url.startswith(idp.authorization_endpoint)
    ]


def test_admin_connects_an_oauth2_mailbox_in_the_browser_then_reconnects_a_revoked_grant(
    browser, live_server, dovecot_oauth_server, oauth_keys
):
    ARTIFACTS.mkdir(exist_ok=True)
    UserFactory(username="root", is_superuser=True, is_staff=True)
    with LocalOAuthServer(oauth_keys, username=f"b{uuid.uuid4().hex[:8]}@mailhub.test") as idp:
        mailbox = MailboxFactory(
            label="Shared support",
            email=idp.username,
            imap_host=dovecot_oauth_server.host,
            imap_port=dovecot_oauth_server.port,
            imap_username=idp.username,
            imap_password="",
            imap_auth=AuthMethod.OAUTH2,
        )
        grant = OAuthGrant.objects.create(
            mailbox=mailbox,
            provider=OAuthProvider.GENERIC,
            authorization_endpoint=idp.authorization_endpoint,
            token_endpoint=idp.token_endpoint,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
        )
        change_url = f"{live_server.url}{reverse('admin:mailboxes_mailbox_change', args=[mailbox.pk])}"
        callback = f"{live_server.url}{reverse('admin:mailboxes_oauth_callback')}"
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        _admin_log_in(page, live_server)

        # Connect: the provider's sign-in (auto-approved) and back to the live server's callback.
        page.goto(change_url)
        assert (
            page.locator("#oauth_grants-0 .field-connection .readonly")
            .inner_text()
            .startswith("Not connected yet")
        )
        page.click("text=Connect with the provider")
        page.wait_for_url(change_url)
        (authorize,) = _authorize_requests(requested, idp)
        assert (authorize["redirect_uri"], authorize["code_challenge_method"]) == (callback, "S256")
        assert any(url.startswith(callback + "?") for url in requested)
        assert page.locator(".messagelist .success").inner_text() == (
            f"Shared support: connected as {idp.username}."
        )
        assert (
            page.locator("#oauth_grants-0 .field-connection .readonly").inner_text().startswith("Connected")
        )
        assert page.locator("#oauth_grants-0 .field-account .readonly").inner_text() == idp.username
        assert page.locator("text=Reconnect with the provider").count() == 1
        html = page.content()
        grant.refresh_from_db()
        for secret in (grant.access_token.reveal(), grant.refresh_token.reveal(), CLIENT_SECRET):
            assert secret not in html
        page.screenshot(path=str(ARTIFACTS / "oauth-connected.png"), full_page=True)

        # A poll over OAuth2 IMAP (Dovecot validating the provider's JWT) works.
        assert mailbox_poll(mailbox_id=mailbox.pk).error == ""  # first contact: history
        dovecot_oauth_server.append(idp.username, _message(1, idp.username))
        result = mailbox_poll(mailbox_id=mailbox.pk)
        assert (result.error, len(result.new_email_ids)) == ("", 1)

        # The user withdraws consent: after one poll the page says what to do.
        idp.revoke()
        OAuthGrant.objects.filter(pk=grant.pk).update(
            access_token_expires_at=timezone.now() - timedelta(seconds=1)
        )
        assert mailbox_poll(mailbox_id=mailbox.pk).error_is_permanent
        (status,) = mailbox_statuses()
        assert (status.state, status.oauth_needs_reconnect) == (MailboxState.NEEDS_RECONNECT, ["imap"])
        page.goto(change_url)
        assert (
            page.locator("#oauth_grants-0 .field-connection .readonly")
            .inner_text()
            .startswith("Needs to be reconnected")
        )
        assert "invalid_grant" in page.locator("#oauth_grants-0 .field-last_error .readonly").inner_text()
        page.screenshot(path=str(ARTIFACTS / "oauth-needs-reconnect.png"), full_page=True)
        page.goto(f"{live_server.url}{reverse('admin:mailboxes_mailbox_changelist')}")
        assert page.locator("td.field-state").inner_text() == "needs_reconnect"
        page.screenshot(path=str(ARTIFACTS / "oauth-mailbox-list-needs-reconnect.png"), full_page=True)

        # Reconnect: connected again, and the mailbox polls at once.
        page.goto(change_url)
        page.click("text=Reconnect with the provider")
        page.wait_for_url(change_url)
        assert page.locator(".messagelist .success").inner_text() == (
            f"Shared support: connected as {idp.username}."
        )
        dovecot_oauth_server.append(idp.username, _message(2, idp.username))
        result = mailbox_poll(mailbox_id=mailbox.pk)
        assert (result.error, len(result.new_email_ids)) == ("", 1)
        grant.refresh_from_db()
        assert (grant.status, grant.last_error) == (GrantStatus.CONNECTED, "")
        assert len(_authorize_requests(requested, idp)) == 2
        assert idp.counts["refresh_token"] == 1  # the one refused refresh: no storm
