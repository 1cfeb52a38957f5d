"""OAuth2 mailboxes end to end against the real servers: the admin connect flow with the local
identity provider, polls over OAuth2 IMAP (Dovecot validating the JWTs), an auto-reply over OAuth2
SMTP, refresh with rotation, concurrent refreshes, revocation without a retry storm, wrong
issuer or tenant, reconnect."""

from __future__ import annotations

import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import requests
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from autoresponse.models import AutoReplyStatus
from autoresponse.services import auto_reply_send
from mailboxes.models import Mailbox
from mailboxes.oauth_models import AuthMethod, GrantStatus, OAuthFlow, OAuthGrant, OAuthProvider
from mailboxes.services import mailbox_poll
from mailboxes.services.oauth import OAuthGrantError, oauth_access_token, oauth_grant_endpoints
from mailhub.admin_oauth import UNKNOWN_STATE
from mailhub.status import MailboxState, mailbox_state, mailboxes_annotate_status
from tests.factories import AutoReplyFactory, EmailFactory, MailboxFactory, UserFactory
from tests.servers import DovecotServer, LocalOAuthServer, OAuthKeys
from tests.servers.oauth import CLIENT_ID, CLIENT_SECRET

pytestmark = [pytest.mark.django_db, pytest.mark.integration]

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def _message(n: int) -> bytes:
    return (
        f"From: Customer <customer{n}@example.test>\r\nTo: user@mailhub.test\r\n"
        f"Subject: Question {n}\r\nMessage-ID: <q{n}-{uuid.uuid4().hex}@example.test>\r\n\r\nHello {n}\r\n"
    ).encode()


@pytest.fixture
def idp(oauth_keys: OAuthKeys) -> Iterator[LocalOAuthServer]:
    """A local identity provider approving a fresh account (its Dovecot mailbox starts empty)."""
    with LocalOAuthServer(oauth_keys, username=f"u{uuid.uuid4().hex[:8]}@mailhub.test") as server:
        yield server


@pytest.fixture
def admin(client):
    client.force_login(UserFactory(is_superuser=True, is_staff=True))
    return client


def _mailbox(dovecot: DovecotServer, idp: LocalOAuthServer, **grant_fields) -> tuple[Mailbox, OAuthGrant]:
    mailbox = MailboxFactory(
        imap_host=dovecot.host,
        imap_port=dovecot.port,
        imap_username=idp.username,
        imap_password="",
        imap_auth=AuthMethod.OAUTH2,
        smtp_auth=AuthMethod.OAUTH2,
        smtp_username=idp.username,
        smtp_password="",
        email=idp.username,
    )
    fields = {
        "provider": OAuthProvider.GENERIC,
        "authorization_endpoint": idp.authorization_endpoint,
        "token_endpoint": idp.token_endpoint,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    fields.update(grant_fields)
    return mailbox, OAuthGrant.objects.create(mailbox=mailbox, **fields)


def _connect(client, grant: OAuthGrant, idp: LocalOAuthServer):
    """The admin's browser: Connect, the provider's (auto-approving) sign-in, back to the callback."""
    started = client.get(reverse("admin:mailboxes_oauth_connect", args=[grant.pk]))
    assert started.status_code == 302
    assert started["Location"].split("?")[0] in (idp.authorization_endpoint, grant_authorize_url(grant))
    answer = requests.get(started["Location"], allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    callback = answer.headers["Location"]
    assert callback.startswith("http://testserver/admin/mailboxes/mailbox/oauth/callback/?")
    return callback, client.get(callback, follow=True)


def grant_authorize_url(grant: OAuthGrant) -> str:
    return oauth_grant_endpoints(grant=grant).authorization_endpoint


def _first_contact(mailbox: Mailbox) -> None:
    """The first poll: what the folder holds then is history, never processed."""
    assert mailbox_poll(mailbox_id=mailbox.pk).error == ""


def _expire(grant: OAuthGrant) -> None:
    OAuthGrant.objects.filter(pk=grant.pk).update(
        access_token_expires_at=timezone.now() - timedelta(seconds=1)
    )


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


# -- The admin connect flow -------------------------------------------------------------------


def test_admin_connect_stores_tokens_encrypted_and_shows_who_was_connected(admin, dovecot_oauth_server, idp):
    mailbox, grant = _mailbox(dovecot_oauth_server, idp)
    _callback, page = _connect(admin, grant, idp)
    assert page.status_code == 200
    assert _messages(page) == [f"{mailbox.label}: connected as {idp.username}."]
    grant.refresh_from_db()
    assert (grant.status, grant.account, grant.version, grant.last_error) == (
        GrantStatus.CONNECTED,
        idp.username,
        1,
        "",
    )
    assert (idp.counts["authorize"], idp.counts["authorization_code"]) == (1, 1)
    access, refresh = grant.access_token.reveal(), grant.refresh_token.reveal()
    stored = OAuthGrant.objects.filter(pk=grant.pk).values("access_token", "refresh_token").get()
    stored = {name: value.stored() for name, value in stored.items()}
    assert stored["access_token"].startswith("fernet:")
    assert stored["refresh_token"].startswith("fernet:")
    html = page.content.decode()
    for secret in (access, refresh, access.split(".")[1], CLIENT_SECRET, stored["refresh_token"]):
        assert secret not in html
    assert "Reconnect with the provider" in html


def test_admin_connect_sends_pkce_s256_and_a_fresh_state(admin, dovecot_oauth_server, idp):
    _, grant = _mailbox(dovecot_oauth_server, idp)
    urls = [
        admin.get(reverse("admin:mailboxes_oauth_connect", args=[grant.pk]))["Location"] for _ in range(2)
    ]
    first, second = (dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query)) for url in urls)
    assert (first["code_challenge_method"], len(first["code_challenge"])) == ("S256", 43)
    assert first["redirect_uri"] == "http://testserver/admin/mailboxes/mailbox/oauth/callback/"
    assert first["state"] != second["state"]
    assert first["code_challenge"] != second["code_challenge"]


def test_callback_replay_is_refused(admin, dovecot_oauth_server, idp):
    _, grant = _mailbox(dovecot_oauth_server, idp)
    callback, _page = _connect(admin, grant, idp)
    replay = admin.get(callback, follow=True)
    assert _messages(replay) == [UNKNOWN_STATE]
    assert idp.counts["authorization_code"] == 1  # the replayed code never reached the provider
    grant.refresh_from_db()
    assert grant.version == 1


def test_callback_in_another_admin_session_is_refused(admin, dovecot_oauth_server, idp):
    _, grant = _mailbox(dovecot_oauth_server, idp)
    started = admin.get(reverse("admin:mailboxes_oauth_connect", args=[grant.pk]))
    callback = requests.get(started["Location"], allow_redirects=False, timeout=10).headers["Location"]
    other = Client()
    other.force_login(UserFactory(is_superuser=True, is_staff=True))
    page = other.get(callback, follow=True)
    assert _messages(page) == [UNKNOWN_STATE]
    assert idp.counts["authorization_code"] == 0
    grant.refresh_from_db()
    assert grant.status == GrantStatus.NOT_CONNECTED


def test_connect_needs_the_change_permission_on_that_mailbox(client, dovecot_oauth_server, idp):
    from django.contrib.auth.models import Permission

    _, grant = _mailbox(dovecot_oauth_server, idp)
    viewer = UserFactory(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_mailbox"))
    grant.mailbox.authorized_users.add(viewer)
    client.force_login(viewer)
    assert client.get(reverse("admin:mailboxes_oauth_connect", args=[grant.pk])).status_code == 403
    stranger = UserFactory(is_staff=True)
    stranger.user_permissions.add(*Permission.objects.filter(codename__in=["view_mailbox", "change_mailbox"]))
    client.force_login(stranger)  # may change mailboxes, but not this one
    assert client.get(reverse("admin:mailboxes_oauth_connect", args=[grant.pk])).status_code == 403
    assert idp.counts["authorize"] == 0


def test_provider_refusal_at_sign_in_is_shown_never_a_500(admin, dovecot_oauth_server, idp):
    mailbox, grant = _mailbox(dovecot_oauth_server, idp)
    started = admin.get(reverse("admin:mailboxes_oauth_connect", args=[grant.pk]))
    state = next(p for p in started["Location"].split("&") if p.startswith("state="))
    page = admin.get(
        f"/admin/mailboxes/mailbox/oauth/callback/?error=access_denied&error_description=User+declined&{state}",
        follow=True,
    )
    assert page.status_code == 200
    reason = "sign-in refused by the identity provider (access_denied: User declined)"
    assert _messages(page) == [f"{mailbox.label}: {reason}"]
    grant.refresh_from_db()
    assert (grant.status, grant.last_error) == (GrantStatus.NOT_CONNECTED, reason)


# -- Polls and sends over OAuth2 -----------------------------------------------------------------


def test_poll_over_oauth2_imap(admin, dovecot_oauth_server, idp):
    mailbox, grant = _mailbox(dovecot_oauth_server, idp)
    _connect(admin, grant, idp)
    _first_contact(mailbox)
    dovecot_oauth_server.append(idp.username, _message(1))
    result = mailbox_poll(mailbox_id=mailbox.pk)
    assert (result.error, len(result.new_email_ids)) == ("", 1)
    assert idp.counts["refresh_token"] == 0  # the fresh access token was used as it is


def test_auto_reply_over_oauth2_smtp(admin, dovecot_oauth_server, smtp_oauth_server, oauth_server):
    mailbox, grant = _mailbox(dovecot_oauth_server, oauth_server)
    Mailbox.objects.filter(pk=mailbox.pk).update(
        smtp_host=smtp_oauth_server.host, smtp_port=smtp_oauth_server.port
    )
    _connect(admin, grant, oauth_server)
    reply = AutoReplyFactory(
        email=EmailFactory(mailbox=mailbox),
        status=AutoReplyStatus.PENDING,
        reason="",
        recipient="customer@example.test",
        rendered_message=(
            "From: user@mailhub.test\r\nTo: customer@example.test\r\nSubject: Re\r\n\r\nThanks\r\n"
        ),
    )
    reply = auto_reply_send(auto_reply_id=reply.pk)
    assert (reply.status, reply.reason) == (AutoReplyStatus.SENT, "")
    assert len(smtp_oauth_server.messages) == 1


# -- Tokens that keep working ----------------------------------------------------------------------


def test_expired_access_token_is_refreshed_and_the_rotated_refresh_token_persisted(
    admin, dovecot_oauth_server, idp
):
    mailbox, grant = _mailbox(dovecot_oauth_server, idp)
    _connect(admin, grant, idp)
    grant.refresh_from_db()
    old_access, old_refresh = grant.access_token.reveal(), grant.refresh_token.reveal()
    _first_contact(mailbox)
    _expire(grant)
    dovecot_oauth_server.append(idp.username, _message(1))
    result = mailbox_poll(mailbox_id=mailbox.pk)
    assert (result.error, len(result.new_email_ids)) == ("", 1)
    grant.refresh_from_db()
    assert idp.counts["refresh_token"] == 1
    assert grant.version == 2
    assert grant.access_token.reveal() != old_access
    assert grant.refresh_token.reveal() != old_refresh
    assert grant.access_token_expires_at > timezone.now() + timedelta(seconds=200)
    # The stored one is the only one the provider still accepts: the next expiry refreshes fine.
    assert idp.refresh_token_count() == 1
    _expire(grant)
    assert mailbox_poll(mailbox_id=mailbox.pk).error == ""
    assert idp.counts["refresh_token"] == 2


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_refreshes_make_one_request_and_keep_a_working_token(
    client, dovecot_oauth_server, idp
):
    client.force_login(UserFactory(is_superuser=True, is_staff=True))
    _, grant = _mailbox(dovecot_oauth_server, idp)
    _connect(client, grant, idp)
    _expire(grant)
    barrier = threading.Barrier(2)
    tokens: list[str] = []
    errors: list[BaseException] = []

    def refresh() -> None:
        try:
            barrier.wait(5)
            tokens.append(oauth_access_token(grant_id=grant.pk).value)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=refresh) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert idp.counts["refresh_token"] == 1
    assert len(tokens) == 2
    assert tokens[0] == tokens[1]
    grant.refresh_from_db()
    assert grant.access_token.reveal() == tokens[0]
    assert idp.refresh_token_count() == 1  # the stored refresh token is the live one
    _expire(grant)
    oauth_access_token(grant_id=grant.pk)
    assert idp.counts["refresh_token"] == 2


def test_revoked_grant_is_a_permanent_error_after_one_poll_and_no_storm(admin, dovecot_oauth_server, idp):
    mailbox, grant = _mailbox(dovecot_oauth_server, idp)
    _connect(admin, grant, idp)
    _first_contact(mailbox)
    idp.revoke()
    _expire(grant)
    first = mailbox_poll(mailbox_id=mailbox.pk)
    assert first.error_is_permanent
    assert first.error.startswith(
        "IMAP OAuth2 connection (Other OAuth2 / OpenID provider) needs to be renewed: "
    )
    assert "invalid_grant" in first.error
    for _ in range(3):
        assert mailbox_poll(mailbox_id=mailbox.pk).error == first.error
    assert idp.counts["refresh_token"] == 1
    grant.refresh_from_db()
    assert grant.status == GrantStatus.NEEDS_RECONNECT
    annotated = mailboxes_annotate_status(Mailbox.objects.filter(pk=mailbox.pk)).get()
    assert mailbox_state(annotated) == MailboxState.NEEDS_RECONNECT
    assert annotated.last_error == first.error
    page = admin.get(reverse("admin:mailboxes_mailbox_change", args=[mailbox.pk])).content.decode()
    assert "Needs to be reconnected" in page
    assert "Reconnect with the provider" in page
    assert "invalid_grant" in page

    # Reconnect: back to work at once.
    _connect(admin, grant, idp)
    mailbox.refresh_from_db()
    assert mailbox.next_poll_at is None
    dovecot_oauth_server.append(idp.username, _message(2))
    result = mailbox_poll(mailbox_id=mailbox.pk)
    assert (result.error, len(result.new_email_ids)) == ("", 1)
    mailbox.refresh_from_db()
    assert mailbox.last_error == ""


def test_token_refused_by_the_mail_server_gets_one_retry_then_asks_for_a_reconnect(
    admin, dovecot_oauth_server, oauth_keys
):
    # Tokens of another issuer than the one Dovecot trusts: the login fails with every token.
    with LocalOAuthServer(oauth_keys, username="x@mailhub.test", issuer="https://other.test") as idp:
        mailbox, grant = _mailbox(dovecot_oauth_server, idp)
        _connect(admin, grant, idp)
        result = mailbox_poll(mailbox_id=mailbox.pk)
        assert result.error_is_permanent
        assert result.error.startswith(
            "IMAP OAuth2 connection needs to be renewed: the IMAP server refused a freshly issued token"
        )
        assert idp.counts["refresh_token"] == 1  # the one retry
        assert mailbox_poll(mailbox_id=mailbox.pk).error.startswith("IMAP OAuth2 connection (")
        assert idp.counts["refresh_token"] == 1
        grant.refresh_from_db()
        assert grant.status == GrantStatus.NEEDS_RECONNECT


# -- Wrong issuer, wrong tenant, Microsoft's endpoints --------------------------------------------


def test_wrong_issuer_is_a_clear_error_at_connect(admin, dovecot_oauth_server, oauth_keys):
    with LocalOAuthServer(oauth_keys, username="x@mailhub.test", issuer="https://other.test") as idp:
        mailbox, grant = _mailbox(dovecot_oauth_server, idp, issuer=oauth_keys.issuer)
        _callback, page = _connect(admin, grant, idp)
    assert _messages(page) == [
        f"{mailbox.label}: the identity provider issued a token of issuer 'https://other.test', expected "
        f"'{oauth_keys.issuer}': wrong issuer (or wrong provider endpoints) on the connection"
    ]
    grant.refresh_from_db()
    assert grant.status == GrantStatus.NOT_CONNECTED
    assert not grant.access_token
    assert not grant.refresh_token


def test_microsoft_refreshes_at_the_tenant_endpoint(admin, dovecot_oauth_server, oauth_keys, settings):
    with LocalOAuthServer(oauth_keys, username=f"m{uuid.uuid4().hex[:6]}@mailhub.test", tenant=TENANT) as idp:
        settings.MAILHUB_OAUTH_MICROSOFT_AUTHORITY = idp.base_url
        mailbox, grant = _mailbox(
            dovecot_oauth_server,
            idp,
            provider=OAuthProvider.MICROSOFT,
            tenant=TENANT,
            authorization_endpoint="",
            token_endpoint="",
        )
        _connect(admin, grant, idp)
        _expire(grant)
        assert mailbox_poll(mailbox_id=mailbox.pk).error == ""
    base = f"/{TENANT}/oauth2/v2.0"
    assert [p.split("?")[0] for p in idp.paths] == [f"{base}/authorize", f"{base}/token", f"{base}/token"]
    assert idp.counts["refresh_token"] == 1


def test_microsoft_wrong_tenant_is_a_clear_error(admin, dovecot_oauth_server, oauth_keys, settings):
    with LocalOAuthServer(oauth_keys, username="m@mailhub.test", tenant=TENANT) as idp:
        settings.MAILHUB_OAUTH_MICROSOFT_AUTHORITY = idp.base_url
        _, grant = _mailbox(
            dovecot_oauth_server, idp, provider=OAuthProvider.MICROSOFT, tenant="contoso.test"
        )
        started = admin.get(reverse("admin:mailboxes_oauth_connect", args=[grant.pk]))
        answer = requests.get(started["Location"], allow_redirects=False, timeout=10)
    assert answer.status_code == 400
    assert answer.json()["error_description"] == "AADSTS90002: Tenant 'contoso.test' not found."


@pytest.mark.parametrize("tenant", ["common", "organizations", "consumers", ""])
def test_microsoft_never_uses_a_multi_tenant_alias(tenant):
    grant = OAuthGrant(provider=OAuthProvider.MICROSOFT, tenant=tenant, client_id="id")
    with pytest.raises(OAuthGrantError, match="needs the directory \\(tenant\\) id of the mailbox"):
        oauth_grant_endpoints(grant=grant)


def test_microsoft_token_endpoint_is_the_tenants(settings):
    grant = OAuthGrant(provider=OAuthProvider.MICROSOFT, tenant="contoso.onmicrosoft.com", client_id="id")
    endpoints = oauth_grant_endpoints(grant=grant)
    assert (
        endpoints.token_endpoint
        == "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    )
    assert endpoints.scope == (
        "offline_access https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send"
    )


def test_microsoft_client_credentials_get_a_token_for_the_shared_mailbox(
    admin, dovecot_oauth_server, oauth_keys, settings
):
    with LocalOAuthServer(oauth_keys, username=f"s{uuid.uuid4().hex[:6]}@mailhub.test", tenant=TENANT) as idp:
        settings.MAILHUB_OAUTH_MICROSOFT_AUTHORITY = idp.base_url
        mailbox, grant = _mailbox(
            dovecot_oauth_server,
            idp,
            provider=OAuthProvider.MICROSOFT,
            tenant=TENANT,
            flow=OAuthFlow.CLIENT_CREDENTIALS,
        )
        page = admin.get(reverse("admin:mailboxes_oauth_connect", args=[grant.pk]), follow=True)
        assert _messages(page) == [f"{mailbox.label}: token obtained with the application permission."]
        _first_contact(mailbox)
        dovecot_oauth_server.append(idp.username, _message(1))
        _expire(grant)
        result = mailbox_poll(mailbox_id=mailbox.pk)
    assert (result.error, len(result.new_email_ids)) == ("", 1)
    assert idp.counts["client_credentials"] == 2
    assert idp.counts["refresh_token"] == 0
