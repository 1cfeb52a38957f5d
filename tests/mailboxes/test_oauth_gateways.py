"""OAuth2 logins on the wire: IMAP AUTHENTICATE OAUTHBEARER / XOAUTH2 against a real Dovecot that
validates the JWTs itself, SMTP AUTH OAUTHBEARER / XOAUTH2 against the test SMTP server, and no
token in a repr, an error message or Django's error report."""

import base64
import imaplib
import smtplib
import time

import imapclient
import pytest
from django.views.debug import ExceptionReporter

from mailboxes import sasl
from mailboxes.imap import ImapError, ImapSettings, _BearerExchange, imap_check_connection
from mailboxes.smtp import SmtpError, SmtpSettings, smtp_check_connection, smtp_send_raw
from tests.servers import DovecotServer, OAuthKeys, RecordingSmtpServer, free_port

pytestmark = pytest.mark.integration

USER = "user@mailhub.test"
RAW = (
    b"From: support@mailhub.test\r\n"
    b"To: customer@example.test\r\n"
    b"Subject: Over OAuth2\r\n"
    b"Message-ID: <oauth-1@mailhub.test>\r\n"
    b"\r\n"
    b"Sent with a bearer token.\r\n"
)


def _imap(server: DovecotServer, token: str, username: str = USER) -> ImapSettings:
    return ImapSettings(
        host=server.host,
        port=server.port,
        security="none",
        username=username,
        password="",
        oauth2_token=token,
        timeout=10,
    )


def _smtp(server: RecordingSmtpServer, token: str, username: str = USER) -> SmtpSettings:
    return SmtpSettings(
        host=server.host, port=server.port, security="none", username=username, oauth2_token=token
    )


class _Token(str):
    """A token whose repr hides it: the test's own frames hold it too, and Django's report shows
    every frame's variables; what is checked is that the gateway's frames and messages don't."""

    def __repr__(self) -> str:
        return "<token>"


def _forms(token: str) -> list[str]:
    """Pieces of the token as a report could show it, plain or inside either base64 SASL message.
    Short pieces: Django's report pretty-prints long values over several lines. The JWT header
    (the same in every token) is left out."""
    texts = [token.split(".", 1)[1]]
    for mechanism in ("OAUTHBEARER", "XOAUTH2"):
        encoded = base64.b64encode(sasl.initial_response(mechanism, USER, token)).decode()
        texts.append(encoded[80:])
    return [text[start : start + 12] for text in texts for start in range(0, len(text) - 12, 12)]


def _report(exc: BaseException) -> str:
    reporter = ExceptionReporter(None, type(exc), exc, exc.__traceback__)
    return reporter.get_traceback_html() + reporter.get_traceback_text()


def _logged_method(server: DovecotServer, username: str) -> str:
    """The SASL method of the latest successful Dovecot login of `username` (its log is written
    by a separate process: wait for the line)."""
    deadline = time.monotonic() + 5
    marker = f"Login: user=<{username}>, method="
    while True:
        lines = [line for line in server.log_text().splitlines() if marker in line]
        if lines:
            return lines[-1].split(marker)[1].split(",")[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no login of {username} in Dovecot's log")
        time.sleep(0.05)


@pytest.fixture
def hide_oauthbearer(monkeypatch):
    """The IMAP server seems to offer XOAUTH2 only (as Microsoft 365 does)."""
    original = imapclient.IMAPClient.has_capability

    def has_capability(self, capability):
        return capability.upper() != "AUTH=OAUTHBEARER" and original(self, capability)

    monkeypatch.setattr(imapclient.IMAPClient, "has_capability", has_capability)


@pytest.fixture
def smtp_xoauth2_only(monkeypatch):
    original = smtplib.SMTP.ehlo

    def ehlo(self, name=""):
        reply = original(self, name)
        self.esmtp_features["auth"] = "LOGIN PLAIN XOAUTH2"
        return reply

    monkeypatch.setattr(smtplib.SMTP, "ehlo", ehlo)


# -- settings -------------------------------------------------------------------------------------


def test_settings_reprs_hide_the_token():
    imap = ImapSettings(
        host="h", port=993, security="ssl", username="u", password="", oauth2_token="tok-imap"
    )
    smtp = SmtpSettings(host="h", port=465, security="ssl", username="u", oauth2_token="tok-smtp")
    assert "tok-" not in repr(imap) + repr(smtp)


def test_settings_take_a_password_or_a_token_not_both():
    with pytest.raises(ValueError, match="a password or an OAuth2 token, not both"):
        ImapSettings(host="h", port=993, security="ssl", username="u", password="p", oauth2_token="t")
    with pytest.raises(ValueError, match="a password or an OAuth2 token, not both"):
        SmtpSettings(host="h", port=465, security="ssl", username="u", password="p", oauth2_token="t")


# -- IMAP -----------------------------------------------------------------------------------------


def test_imap_logs_in_with_oauthbearer_when_offered_and_selects(dovecot_oauth_server, oauth_keys):
    username = f"ob-{dovecot_oauth_server.new_account()}@mailhub.test"
    message = imap_check_connection(_imap(dovecot_oauth_server, oauth_keys.access_token(username), username))
    assert message.startswith(
        f"IMAP OK: logged in to 127.0.0.1:{dovecot_oauth_server.port} as {username!r}, folder 'INBOX' "
        "has 0 message(s) (UIDVALIDITY "
    )
    assert _logged_method(dovecot_oauth_server, username) == "OAUTHBEARER"


def test_imap_logs_in_with_xoauth2_when_oauthbearer_is_not_offered(
    dovecot_oauth_server, oauth_keys, hide_oauthbearer
):
    username = f"x2-{dovecot_oauth_server.new_account()}@mailhub.test"
    message = imap_check_connection(_imap(dovecot_oauth_server, oauth_keys.access_token(username), username))
    assert message.startswith(f"IMAP OK: logged in to 127.0.0.1:{dovecot_oauth_server.port} as {username!r}")
    assert _logged_method(dovecot_oauth_server, username) == "XOAUTH2"


REFUSED_TOKENS = {
    "expired": lambda keys: keys.access_token(USER, issued_at=time.time() - 3600, lifetime=60),
    "wrong signature": lambda keys: OAuthKeys.generate().access_token(USER),
    "another user": lambda keys: keys.access_token("someone-else@mailhub.test"),
    "wrong issuer": lambda keys: keys.access_token(USER, iss="https://login.example.test/other-tenant"),
    "wrong audience": lambda keys: keys.access_token(USER, aud="another-client"),
}


@pytest.mark.parametrize("mechanism", ["OAUTHBEARER", "XOAUTH2"])
@pytest.mark.parametrize("kind", sorted(REFUSED_TOKENS))
def test_imap_refused_token_is_an_auth_failure_without_the_token(
    dovecot_oauth_server, oauth_keys, monkeypatch, kind, mechanism
):
    if mechanism == "XOAUTH2":
        original = imapclient.IMAPClient.has_capability
        monkeypatch.setattr(
            imapclient.IMAPClient,
            "has_capability",
            lambda self, cap: cap.upper() != "AUTH=OAUTHBEARER" and original(self, cap),
        )
    token = _Token(REFUSED_TOKENS[kind](oauth_keys))
    with pytest.raises(ImapError) as raised:
        imap_check_connection(_imap(dovecot_oauth_server, token))
    status = "invalid_token" if mechanism == "OAUTHBEARER" else "401"
    assert (raised.value.permanent, raised.value.auth_failed) == (True, True)
    assert str(raised.value) == (
        f"IMAP login with an OAuth2 token failed for {USER!r} on 127.0.0.1:{dovecot_oauth_server.port}: "
        f"{mechanism}: [AUTHENTICATIONFAILED] Authentication failed. (OAuth2 status {status!r})"
    )
    report = _report(raised.value)
    for form in _forms(token):
        assert form not in report


def test_imap_wrong_password_is_an_auth_failure_too(dovecot_server):
    imap = ImapSettings(
        host=dovecot_server.host,
        port=dovecot_server.port,
        security="none",
        username=dovecot_server.new_account(),
        password="wrong",
        timeout=10,
    )
    with pytest.raises(ImapError) as raised:
        imap_check_connection(imap)
    assert (raised.value.permanent, raised.value.auth_failed) == (True, True)


def test_imap_connection_refused_is_no_auth_failure(oauth_keys):
    imap = ImapSettings(
        host="127.0.0.1",
        port=free_port(),
        security="none",
        username=USER,
        password="",
        oauth2_token=oauth_keys.access_token(USER),
    )
    with pytest.raises(ImapError) as raised:
        imap_check_connection(imap)
    assert (raised.value.permanent, raised.value.auth_failed) == (False, False)


def test_imap_unavailable_login_is_transient_and_no_auth_failure(
    dovecot_oauth_server, oauth_keys, monkeypatch
):
    def unavailable(self, mech_name, mech_callable):
        raise imapclient.exceptions.LoginError("[UNAVAILABLE] Temporary authentication failure.")

    monkeypatch.setattr(imapclient.IMAPClient, "sasl_login", unavailable)
    with pytest.raises(ImapError) as raised:
        imap_check_connection(_imap(dovecot_oauth_server, oauth_keys.access_token(USER)))
    assert (raised.value.permanent, raised.value.auth_failed) == (False, False)
    assert "could not check the login with an OAuth2 token" in str(raised.value)


@pytest.mark.parametrize("token", ["two words", "line\r\nbreak", "sep\x01arator", "caf\u00e9", "a=b"])
def test_imap_token_outside_rfc6750_is_never_sent(dovecot_oauth_server, monkeypatch, token):
    sent = []
    monkeypatch.setattr(imapclient.IMAPClient, "sasl_login", lambda self, *args: sent.append(args))
    imap = ImapSettings(
        host=dovecot_oauth_server.host,
        port=dovecot_oauth_server.port,
        security="none",
        username=USER,
        password="",
        oauth2_token=token,
    )
    with pytest.raises(ImapError) as raised:
        imap_check_connection(imap)
    assert sent == []
    assert (raised.value.permanent, raised.value.auth_failed) == (True, False)
    assert str(raised.value) == (
        f"IMAP login to 127.0.0.1:{dovecot_oauth_server.port} not attempted: the access token has "
        "characters that RFC 6750 bearer tokens can't contain (nothing was sent)"
    )


def test_imap_forced_error_in_oauth_login_is_reported_without_the_token(
    dovecot_oauth_server, oauth_keys, monkeypatch
):
    """Deep in imaplib, where the base64 SASL message is a local variable, the login breaks."""

    def explode(self, inp):
        raise RuntimeError("encoder broke")

    monkeypatch.setattr(imaplib._Authenticator, "encode", explode)
    token = _Token(oauth_keys.access_token(USER))
    with pytest.raises(ImapError) as raised:
        imap_check_connection(_imap(dovecot_oauth_server, token))
    assert str(raised.value) == (
        f"IMAP login to 127.0.0.1:{dovecot_oauth_server.port} failed on our side (RuntimeError)"
    )
    report = _report(raised.value)
    assert "encoder broke" in report
    for form in _forms(token):
        assert form not in report


@pytest.mark.parametrize(("mechanism", "answer"), [("OAUTHBEARER", b"\x01"), ("XOAUTH2", b"")])
def test_imap_error_challenge_is_answered_without_the_credential(mechanism, answer):
    """RFC 7628 §3.2.3 (and Google's XOAUTH2): the credential goes once; the error challenge
    gets %x01 (OAUTHBEARER) or an empty response (XOAUTH2), never the token again."""
    exchange = _BearerExchange(mechanism, b"credential")
    first = exchange(b"")
    second = exchange(b'{"status":"invalid_token","schemes":"bearer"}')
    assert (first, second, exchange.status) == (b"credential", answer, "invalid_token")
    assert "credential" not in repr(exchange)


# -- SMTP -----------------------------------------------------------------------------------------


def test_smtp_sends_with_oauthbearer_when_offered(smtp_oauth_server, oauth_keys):
    refused = smtp_send_raw(
        _smtp(smtp_oauth_server, oauth_keys.access_token(USER)),
        sender="support@mailhub.test",
        recipients=["customer@example.test"],
        message=RAW,
    )
    (received,) = smtp_oauth_server.wait_for(1)
    assert refused == {}
    assert (received.auth_login, received.auth_mechanism, received.raw) == (USER, "OAUTHBEARER", RAW)


def test_smtp_sends_with_xoauth2(smtp_oauth_server, oauth_keys, smtp_xoauth2_only):
    smtp_send_raw(
        _smtp(smtp_oauth_server, oauth_keys.access_token(USER)),
        sender="support@mailhub.test",
        recipients=["customer@example.test"],
        message=RAW,
    )
    (received,) = smtp_oauth_server.wait_for(1)
    assert (received.auth_login, received.auth_mechanism, received.rcpt_tos) == (
        USER,
        "XOAUTH2",
        ("customer@example.test",),
    )


@pytest.mark.parametrize(("mechanism", "answer"), [("OAUTHBEARER", b"\x01"), ("XOAUTH2", b"")])
@pytest.mark.parametrize("kind", sorted(REFUSED_TOKENS))
def test_smtp_refused_token_is_an_auth_failure_without_the_token(
    smtp_oauth_server, oauth_keys, monkeypatch, kind, mechanism, answer
):
    original = smtplib.SMTP.ehlo

    def ehlo(self, name=""):
        reply = original(self, name)
        self.esmtp_features["auth"] = f"LOGIN PLAIN {mechanism}"
        return reply

    monkeypatch.setattr(smtplib.SMTP, "ehlo", ehlo)
    token = _Token(REFUSED_TOKENS[kind](oauth_keys))
    with pytest.raises(SmtpError) as raised:
        smtp_send_raw(
            _smtp(smtp_oauth_server, token),
            sender="support@mailhub.test",
            recipients=["customer@example.test"],
            message=RAW,
        )
    status = "invalid_token" if mechanism == "OAUTHBEARER" else "401"
    assert (raised.value.permanent, raised.value.auth_failed, raised.value.code) == (True, True, 535)
    assert str(raised.value) == (
        f"SMTP login with an OAuth2 token failed for {USER!r} on 127.0.0.1:{smtp_oauth_server.port}: "
        f"535 5.7.8 Authentication credentials invalid (OAuth2 status {status!r})"
    )
    # The error challenge was answered as the mechanism requires, without the token.
    assert [(f.mechanism, f.answer) for f in smtp_oauth_server.bearer_failures] == [(mechanism, answer)]
    assert smtp_oauth_server.messages == []
    report = _report(raised.value)
    for form in _forms(token):
        assert form not in report


def test_smtp_token_of_another_login_is_refused(smtp_oauth_server, oauth_keys):
    other = "other@mailhub.test"
    with pytest.raises(SmtpError) as raised:
        smtp_check_connection(_smtp(smtp_oauth_server, oauth_keys.access_token(other), username=other))
    assert (raised.value.auth_failed, smtp_oauth_server.bearer_failures[0].reason) == (
        True,
        "login of another user",
    )


def test_smtp_wrong_password_is_an_auth_failure_too(smtp_auth_server):
    smtp = SmtpSettings(
        host=smtp_auth_server.host,
        port=smtp_auth_server.port,
        security="none",
        username="smtp-user",
        password="x",
    )
    with pytest.raises(SmtpError) as raised:
        smtp_check_connection(smtp)
    assert (raised.value.permanent, raised.value.auth_failed, raised.value.code) == (True, True, 535)


def test_smtp_temporary_auth_failure_is_transient_and_no_auth_failure(
    smtp_oauth_server, oauth_keys, monkeypatch
):
    original = smtplib.SMTP.docmd

    def docmd(self, cmd, args=""):
        if cmd == "AUTH":
            original(self, "NOOP")
            return 454, b"4.7.0 Temporary authentication failure"
        return original(self, cmd, args)

    monkeypatch.setattr(smtplib.SMTP, "docmd", docmd)
    with pytest.raises(SmtpError) as raised:
        smtp_check_connection(_smtp(smtp_oauth_server, oauth_keys.access_token(USER)))
    assert (raised.value.permanent, raised.value.auth_failed, raised.value.code) == (False, False, 454)


def test_smtp_without_oauth_mechanisms_never_sends_the_token(smtp_auth_server, oauth_keys):
    smtp = _smtp(smtp_auth_server, oauth_keys.access_token(USER), username="smtp-user")
    with pytest.raises(SmtpError) as raised:
        smtp_check_connection(smtp)
    assert (raised.value.permanent, raised.value.auth_failed) == (True, False)
    assert str(raised.value) == (
        f"SMTP server 127.0.0.1:{smtp_auth_server.port} offers neither AUTH OAUTHBEARER nor XOAUTH2, "
        "which an OAuth2 login needs (the token was not sent)"
    )


def test_smtp_forced_error_in_oauth_login_is_reported_without_the_token(
    smtp_oauth_server, oauth_keys, monkeypatch
):
    original = smtplib.SMTP.putcmd

    def explode(self, cmd, args=""):
        if cmd.upper() == "AUTH":
            raise RuntimeError("socket writer broke")
        return original(self, cmd, args)

    monkeypatch.setattr(smtplib.SMTP, "putcmd", explode)
    token = _Token(oauth_keys.access_token(USER))
    with pytest.raises(SmtpError) as raised:
        smtp_check_connection(_smtp(smtp_oauth_server, token))
    assert str(raised.value) == (
        f"SMTP login to 127.0.0.1:{smtp_oauth_server.port} failed on our side (RuntimeError)"
    )
    report = _report(raised.value)
    assert "socket writer broke" in report
    for form in _forms(token):
        assert form not in report
