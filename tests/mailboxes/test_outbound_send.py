"""Sending staff's answers against the real test SMTP server: exactly once, Bcc only in the
envelope, and each bad ending recorded as what it is (pending with backoff, failed, unknown)."""

import urllib.parse
from datetime import timedelta

import pytest
import requests
from cryptography.fernet import Fernet
from django.db import connection
from django.utils import timezone

import mailboxes.services.sending as sending
from mailboxes.encryption import CIPHERTEXT_PREFIX
from mailboxes.models import OutboundStatus
from mailboxes.oauth_models import AuthMethod, GrantStatus, OAuthGrant, OAuthProvider
from mailboxes.services.oauth import oauth_authorization_start, oauth_grant_connect
from mailboxes.services.sending import (
    outbound_send,
    outbound_send_again,
    outbounds_due,
    outbounds_mark_stale_sending,
)
from tests.autoresponse.test_send_outcomes import StallingSmtpServer
from tests.factories import MailboxFactory, outbound_message
from tests.servers import LocalOAuthServer, OAuthKeys
from tests.servers.oauth import CLIENT_ID, CLIENT_SECRET

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def mailbox_on(server, **fields):
    return MailboxFactory(
        email="support@acme.example",
        smtp_host=server.host,
        smtp_port=server.port,
        smtp_security="none",
        **fields,
    )


def raw_of(outbound) -> bytes:
    with outbound.email.raw.open("rb") as stored:
        return stored.read()


def test_sent_once_with_the_stored_bytes_and_a_second_call_sends_nothing(smtp_server):
    outbound = outbound_message(mailbox=mailbox_on(smtp_server))
    assert outbound_send(outbound_id=outbound.pk).status == OutboundStatus.SENT
    again = outbound_send(outbound_id=outbound.pk)
    assert (again.status, again.attempts, again.reason) == (OutboundStatus.SENT, 1, "")
    (received,) = smtp_server.messages
    assert (received.mail_from, received.rcpt_tos) == ("support@acme.example", ("ann@customer.example",))
    assert received.raw.replace(b"\r\n", b"\n") == raw_of(outbound).replace(b"\r\n", b"\n")


def test_a_concurrent_call_while_the_first_is_on_the_wire_sends_nothing(smtp_server, monkeypatch):
    outbound = outbound_message(mailbox=mailbox_on(smtp_server))
    real_send = sending.smtp_send_raw
    seen = []

    def a_second_worker_meanwhile(*args, **kwargs):
        seen.append(outbound_send(outbound_id=outbound.pk).status)  # the row is claimed: no send
        return real_send(*args, **kwargs)

    monkeypatch.setattr(sending, "smtp_send_raw", a_second_worker_meanwhile)
    assert outbound_send(outbound_id=outbound.pk).status == OutboundStatus.SENT
    assert seen == [OutboundStatus.SENDING]
    assert len(smtp_server.messages) == 1


def test_bcc_recipients_get_it_but_are_not_in_the_bytes(smtp_server):
    outbound = outbound_message(
        mailbox=mailbox_on(smtp_server), cc=("carl@customer.example",), bcc=("boss@acme.example",)
    )
    outbound_send(outbound_id=outbound.pk)
    (received,) = smtp_server.messages
    assert set(received.rcpt_tos) == {"ann@customer.example", "carl@customer.example", "boss@acme.example"}
    assert b"boss@acme.example" not in received.raw
    assert received.message["Bcc"] is None


def test_smtp_auth_server_gets_the_mailbox_login(smtp_auth_server):
    mailbox = mailbox_on(
        smtp_auth_server, smtp_username=smtp_auth_server.username, smtp_password=smtp_auth_server.password
    )
    assert outbound_send(outbound_id=outbound_message(mailbox=mailbox).pk).status == OutboundStatus.SENT
    assert [m.auth_login for m in smtp_auth_server.messages] == [smtp_auth_server.username]


def test_no_answer_after_the_final_dot_is_uncertain_and_never_sent_again(request, settings):
    settings.MAILHUB_NETWORK_TIMEOUT, settings.MAILHUB_SMTP_DATA_TIMEOUT = 0.5, 1.0
    server = StallingSmtpServer("final")
    request.addfinalizer(server.close)
    outbound = outbound_message(mailbox=mailbox_on(server))
    result = outbound_send(outbound_id=outbound.pk)
    assert (result.status, result.attempts, result.next_attempt_at) == (OutboundStatus.UNCERTAIN, 1, None)
    assert "not sent again automatically" in result.reason
    assert outbound_send(outbound_id=outbound.pk).status == OutboundStatus.UNCERTAIN
    assert outbounds_due(mailbox_id=outbound.email.mailbox_id, created_before=None) == []
    assert len(server.messages) == 1


def test_a_transient_refusal_leaves_it_pending_with_a_backoff(smtp_server):
    smtp_server.set_failure(451, at="rcpt")
    outbound = outbound_message(mailbox=mailbox_on(smtp_server))
    result = outbound_send(outbound_id=outbound.pk)
    assert (result.status, result.attempts) == (OutboundStatus.PENDING, 1)
    assert result.next_attempt_at > timezone.now()
    assert "451" in result.reason
    assert outbounds_due(mailbox_id=outbound.email.mailbox_id, created_before=None) == []
    smtp_server.set_failure(None)
    assert outbound_send(outbound_id=outbound.pk).status == OutboundStatus.PENDING  # backoff not over
    result.next_attempt_at = timezone.now() - timedelta(seconds=1)
    result.save()
    assert outbounds_due(mailbox_id=outbound.email.mailbox_id, created_before=None) == [outbound.pk]
    assert outbound_send(outbound_id=outbound.pk).status == OutboundStatus.SENT
    assert len(smtp_server.messages) == 1


def test_a_permanent_refusal_fails_it_with_the_reason(smtp_server):
    smtp_server.set_failure(550, at="data")
    outbound = outbound_message(mailbox=mailbox_on(smtp_server))
    result = outbound_send(outbound_id=outbound.pk)
    assert (result.status, result.next_attempt_at) == (OutboundStatus.FAILED, None)
    assert "550" in result.reason
    assert smtp_server.messages == []


def test_a_partial_refusal_is_sent_with_the_refused_recipients_said(smtp_server, monkeypatch):
    outbound = outbound_message(mailbox=mailbox_on(smtp_server), cc=("nobody@customer.example",))
    handler = smtp_server._controller.handler
    accept = handler.handle_RCPT

    async def refuse_nobody(server, session, envelope, address, rcpt_options):
        if address == "nobody@customer.example":
            return "550 5.1.1 No such user"
        return await accept(server, session, envelope, address, rcpt_options)

    monkeypatch.setattr(handler, "handle_RCPT", refuse_nobody)
    result = outbound_send(outbound_id=outbound.pk)
    assert result.status == OutboundStatus.SENT
    assert result.reason == "refused by the server: nobody@customer.example (550 5.1.1 No such user)"
    assert [m.rcpt_tos for m in smtp_server.messages] == [("ann@customer.example",)]


def test_a_stale_sending_row_becomes_uncertain_and_is_not_sent(smtp_server):
    outbound = outbound_message(
        mailbox=mailbox_on(smtp_server),
        status=OutboundStatus.SENDING,
        claimed_at=timezone.now() - timedelta(hours=2),
    )
    assert outbounds_mark_stale_sending(mailbox_id=outbound.email.mailbox_id) == 1
    outbound.refresh_from_db()
    assert outbound.status == OutboundStatus.UNCERTAIN
    assert outbound_send(outbound_id=outbound.pk).status == OutboundStatus.UNCERTAIN
    assert smtp_server.messages == []


def test_send_again_sends_an_uncertain_message_once_more(smtp_server):
    outbound = outbound_message(mailbox=mailbox_on(smtp_server), status=OutboundStatus.UNCERTAIN, attempts=1)
    assert outbound_send_again(outbound_id=outbound.pk, requested_by="boss", uncertain_checked=True) is True
    assert (
        outbound_send_again(outbound_id=outbound.pk, requested_by="boss", uncertain_checked=True) is False
    )  # a double click
    assert outbound_send(outbound_id=outbound.pk).status == OutboundStatus.SENT
    assert len(smtp_server.messages) == 1


def test_an_undecryptable_smtp_secret_fails_the_send(smtp_server):
    outbound = outbound_message(mailbox=mailbox_on(smtp_server))
    foreign = Fernet(Fernet.generate_key()).encrypt(b"secret").decode()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE mailboxes_mailbox SET smtp_password = %s WHERE id = %s",
            [CIPHERTEXT_PREFIX + foreign, outbound.email.mailbox_id],
        )
    result = outbound_send(outbound_id=outbound.pk)
    assert result.status == OutboundStatus.FAILED
    assert result.reason.startswith("SMTP password of the mailbox unusable")
    assert smtp_server.messages == []


def test_send_again_moves_an_uncertain_message_only_when_checked(smtp_server):
    """Review i12, R2: the confirmation is part of the conditional UPDATE, not of an earlier read."""
    outbound = outbound_message(mailbox=mailbox_on(smtp_server), status=OutboundStatus.UNCERTAIN, attempts=1)
    assert outbound_send_again(outbound_id=outbound.pk, requested_by="boss", uncertain_checked=False) is False
    outbound.refresh_from_db()
    assert outbound.status == OutboundStatus.UNCERTAIN


# -- Staff answers over OAuth2 SMTP (AUTH XOAUTH2 / OAUTHBEARER) ----------------------------------


def oauth_mailbox_on(server, idp):
    """A mailbox that sends with OAuth2 only (no password stored), connected to `idp` through the
    authorization-code flow (the provider auto-approves, as the admin's browser would see it)."""
    mailbox = mailbox_on(server, smtp_auth=AuthMethod.OAUTH2, smtp_username=server.username, smtp_password="")
    grant = OAuthGrant.objects.create(
        mailbox=mailbox,
        provider=OAuthProvider.GENERIC,
        authorization_endpoint=idp.authorization_endpoint,
        token_endpoint=idp.token_endpoint,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
    )
    redirect_uri = "http://127.0.0.1/admin/mailboxes/mailbox/oauth/callback/"
    start = oauth_authorization_start(grant=grant, redirect_uri=redirect_uri)
    location = requests.get(start.url, allow_redirects=False, timeout=10).headers["Location"]
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))["code"]
    oauth_grant_connect(
        grant_id=grant.pk, code=code, code_verifier=start.code_verifier, redirect_uri=redirect_uri
    )
    return mailbox, grant


def test_an_answer_is_sent_with_the_mailbox_oauth2_token(smtp_oauth_server, oauth_server):
    mailbox, _grant = oauth_mailbox_on(smtp_oauth_server, oauth_server)
    outbound = outbound_message(mailbox=mailbox)
    result = outbound_send(outbound_id=outbound.pk)
    assert (result.status, result.attempts, result.reason) == (OutboundStatus.SENT, 1, "")
    (received,) = smtp_oauth_server.messages
    assert (received.auth_login, received.auth_mechanism) == ("user@mailhub.test", "OAUTHBEARER")
    assert received.raw.replace(b"\r\n", b"\n") == raw_of(outbound).replace(b"\r\n", b"\n")
    assert oauth_server.counts["refresh_token"] == 0  # the fresh token of the connect was used


def test_a_refused_token_gets_one_retry_with_a_fresh_one_and_the_answer_goes_out_once(
    smtp_oauth_server, oauth_server
):
    mailbox, grant = oauth_mailbox_on(smtp_oauth_server, oauth_server)
    # Valid for an hour by its expiry, but the server refuses it (revoked early, signed with a key
    # it no longer trusts): only the server's refusal tells.
    OAuthGrant.objects.filter(pk=grant.pk).update(
        access_token=OAuthGrant(
            access_token=OAuthKeys.generate().access_token("user@mailhub.test")
        ).access_token.stored()
    )
    outbound = outbound_message(mailbox=mailbox)
    result = outbound_send(outbound_id=outbound.pk)
    assert (result.status, result.attempts, result.reason) == (OutboundStatus.SENT, 1, "")
    assert [f.reason for f in smtp_oauth_server.bearer_failures] == ["bad signature or not a JWT"]
    assert len(smtp_oauth_server.messages) == 1
    assert oauth_server.counts["refresh_token"] == 1
    grant.refresh_from_db()
    assert (grant.status, grant.version) == (GrantStatus.CONNECTED, 2)


def test_a_fresh_token_refused_too_fails_the_answer_and_asks_for_a_reconnect(smtp_oauth_server, oauth_keys):
    # Tokens of another issuer than the one the SMTP server trusts: every token is refused.
    with LocalOAuthServer(oauth_keys, issuer="https://other.test") as idp:
        mailbox, grant = oauth_mailbox_on(smtp_oauth_server, idp)
        outbound = outbound_message(mailbox=mailbox)
        result = outbound_send(outbound_id=outbound.pk)
        second = outbound_message(mailbox=mailbox)
        again = outbound_send(outbound_id=second.pk)
    assert result.status == OutboundStatus.FAILED
    assert result.reason.startswith(
        "SMTP OAuth2 connection needs to be renewed: the SMTP server refused a freshly issued token"
    )
    assert len(smtp_oauth_server.bearer_failures) == 2  # the first try and the one retry
    assert smtp_oauth_server.messages == []
    grant.refresh_from_db()
    assert grant.status == GrantStatus.NEEDS_RECONNECT
    # The next answer fails at once: no login, no request to the identity provider.
    assert again.status == OutboundStatus.FAILED
    assert again.reason.startswith(
        "SMTP OAuth2 connection (Other OAuth2 / OpenID provider) needs to be renewed"
    )
    assert (len(smtp_oauth_server.bearer_failures), idp.counts["refresh_token"]) == (2, 1)
