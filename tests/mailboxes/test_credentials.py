"""Passwords on the wire and off it: UTF-8 logins (RFC 4616 PLAIN), and no secret in a repr,
an error message or Django's error report."""

import base64
import imaplib
import smtplib
import sys

import pytest
from django.contrib.messages import get_messages
from django.core.signals import got_request_exception
from django.urls import reverse
from django.views.debug import ExceptionReporter

from mailboxes.imap import ImapError, ImapSettings, imap_check_connection
from mailboxes.smtp import SmtpError, SmtpSettings, smtp_check_connection
from tests.factories import MailboxFactory, UserFactory
from tests.servers.dovecot import DovecotServer, ImapAccount
from tests.servers.smtp import RecordingSmtpServer

NON_ASCII = "Grüße-Paßwort"
# Each character of the password that is not ASCII: none may appear in an error message.
NON_ASCII_CHARS = sorted({char for char in NON_ASCII if not char.isascii()})


def _forms(secret: str) -> list[str]:
    """The password as a report could show it: plain, repr'd UTF-8 bytes, base64 of a SASL
    PLAIN message."""
    utf8 = secret.encode()
    return [
        secret,
        repr(utf8)[2:-1],
        base64.b64encode(utf8).decode(),
        base64.b64encode(b"\0user\0" + utf8).decode()[8:],
    ]


def _report(exc: BaseException) -> str:
    reporter = ExceptionReporter(None, type(exc), exc, exc.__traceback__)
    return reporter.get_traceback_html() + reporter.get_traceback_text()


@pytest.fixture(scope="module")
def utf8_dovecot():
    """Dovecot whose accounts all have the non-ASCII password; AUTH=PLAIN and LOGIN offered."""
    with DovecotServer(password=NON_ASCII) as server:
        yield server


@pytest.fixture(scope="module")
def login_only_dovecot():
    """Dovecot advertising no AUTH=PLAIN (only AUTH=LOGIN)."""
    with DovecotServer(password=NON_ASCII, auth_mechanisms="login") as server:
        yield server


def _imap(server: DovecotServer, password: str = NON_ASCII) -> ImapSettings:
    return ImapSettings(
        host=server.host,
        port=server.port,
        security="none",
        username=server.new_account(),
        password=password,
        timeout=10,
    )


def _smtp(server: RecordingSmtpServer, password: str = NON_ASCII) -> SmtpSettings:
    return SmtpSettings(
        host=server.host, port=server.port, security="none", username="smtp-user", password=password
    )


# -- reprs ----------------------------------------------------------------------------------------


def test_settings_reprs_hide_the_password():
    imap = ImapSettings(host="h", port=993, security="ssl", username="u", password="hunter2-imap")
    smtp = SmtpSettings(host="h", port=465, security="ssl", username="u", password="hunter2-smtp")
    assert "hunter2" not in repr(imap)
    assert "hunter2" not in repr(smtp)
    assert repr(imap) == (
        "ImapSettings(host='h', port=993, security='ssl', username='u', folder='INBOX', timeout=30.0, "
        "ca_file='')"
    )


@pytest.mark.django_db
def test_mailbox_and_its_secrets_reprs_hide_the_password():
    mailbox = MailboxFactory(label="Support", imap_password="hunter2-imap", smtp_password="")
    shown = " ".join([repr(mailbox), str(mailbox), repr(mailbox.imap_password), str(mailbox.imap_password)])
    assert "hunter2" not in shown
    assert (repr(mailbox.imap_password), repr(mailbox.smtp_password)) == (
        "<StoredSecret: set>",
        "<StoredSecret: empty>",
    )


# -- IMAP -----------------------------------------------------------------------------------------


@pytest.mark.integration
def test_imap_non_ascii_password_logs_in_with_authenticate_plain(utf8_dovecot):
    imap = _imap(utf8_dovecot)
    assert imap_check_connection(imap).startswith(
        f"IMAP OK: logged in to 127.0.0.1:{utf8_dovecot.port} as {imap.username!r}, folder 'INBOX' "
        "has 0 message(s) (UIDVALIDITY "
    )


@pytest.mark.integration
def test_imap_wrong_non_ascii_password_error_shows_no_character_of_it(utf8_dovecot):
    imap = _imap(utf8_dovecot, password="Wröng-Paßwort")
    with pytest.raises(ImapError) as raised:
        imap_check_connection(imap)
    assert raised.value.permanent is True
    assert str(raised.value).startswith(f"IMAP login failed for {imap.username!r} on 127.0.0.1:")
    assert not any(char in str(raised.value) for char in "öß")


@pytest.mark.integration
def test_imap_non_ascii_password_without_auth_plain_is_permanent_and_shows_no_character(
    login_only_dovecot,
):
    imap = _imap(login_only_dovecot)
    with pytest.raises(ImapError) as raised:
        imap_check_connection(imap)
    assert raised.value.permanent is True
    assert str(raised.value) == (
        f"IMAP server 127.0.0.1:{login_only_dovecot.port} does not offer AUTHENTICATE PLAIN "
        "(AUTH=PLAIN), and its LOGIN command only carries ASCII: a username or password with "
        "non-ASCII characters can't be sent to it (the password was not sent)"
    )
    assert not any(char in str(raised.value) for char in NON_ASCII_CHARS)


@pytest.mark.integration
def test_imap_forced_error_in_login_is_reported_without_the_password(utf8_dovecot, monkeypatch):
    """Deep in imaplib, where the SASL message is a local variable, the login breaks."""

    def explode(self, inp):
        raise RuntimeError("encoder broke")

    monkeypatch.setattr(imaplib._Authenticator, "encode", explode)
    with pytest.raises(ImapError) as raised:
        imap_check_connection(_imap(utf8_dovecot))
    assert str(raised.value) == (
        f"IMAP login to 127.0.0.1:{utf8_dovecot.port} failed on our side (RuntimeError)"
    )
    report = _report(raised.value)
    assert "encoder broke" in report  # the chained cause is in the report...
    for form in _forms(NON_ASCII):
        assert form not in report  # ...without the variables that hold the password


# -- SMTP -----------------------------------------------------------------------------------------


@pytest.fixture
def utf8_smtp():
    with RecordingSmtpServer(username="smtp-user", password=NON_ASCII) as server:
        yield server


@pytest.mark.integration
def test_smtp_non_ascii_password_logs_in_with_utf8_auth_plain(utf8_smtp):
    assert smtp_check_connection(_smtp(utf8_smtp)) == (
        f"SMTP OK: connected to 127.0.0.1:{utf8_smtp.port} as 'smtp-user', NOOP answered 250."
    )


@pytest.mark.integration
def test_smtp_wrong_non_ascii_password_error_shows_no_character_of_it(utf8_smtp):
    with pytest.raises(SmtpError) as raised:
        smtp_check_connection(_smtp(utf8_smtp, password="Wröng-Paßwort"))
    assert (raised.value.permanent, raised.value.code) == (True, 535)
    assert str(raised.value).startswith(
        f"SMTP login failed for 'smtp-user' on 127.0.0.1:{utf8_smtp.port}: 535"
    )
    assert not any(char in str(raised.value) for char in "öß")


@pytest.mark.integration
def test_smtp_non_ascii_password_without_auth_plain_is_permanent(utf8_smtp, monkeypatch):
    original = smtplib.SMTP.ehlo

    def ehlo_without_plain(self, name=""):
        reply = original(self, name)
        self.esmtp_features["auth"] = "LOGIN"
        return reply

    monkeypatch.setattr(smtplib.SMTP, "ehlo", ehlo_without_plain)
    with pytest.raises(SmtpError) as raised:
        smtp_check_connection(_smtp(utf8_smtp))
    assert raised.value.permanent is True
    assert str(raised.value) == (
        f"SMTP server 127.0.0.1:{utf8_smtp.port} does not offer AUTH PLAIN, which a username or "
        "password with non-ASCII characters needs (the password was not sent)"
    )


@pytest.mark.integration
def test_smtp_forced_error_in_login_is_reported_without_the_password(utf8_smtp, monkeypatch):
    original = smtplib.SMTP.putcmd

    def explode(self, cmd, args=""):
        if cmd.upper() == "AUTH":
            raise RuntimeError("socket writer broke")
        return original(self, cmd, args)

    monkeypatch.setattr(smtplib.SMTP, "putcmd", explode)
    with pytest.raises(SmtpError) as raised:
        smtp_check_connection(_smtp(utf8_smtp))
    assert str(raised.value) == f"SMTP login to 127.0.0.1:{utf8_smtp.port} failed on our side (RuntimeError)"
    report = _report(raised.value)
    assert "socket writer broke" in report
    for form in _forms(NON_ASCII):
        assert form not in report


# -- the admin ------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.django_db
def test_test_connection_action_never_answers_500_on_a_non_ascii_password(client, login_only_dovecot):
    client.force_login(UserFactory(is_superuser=True, is_staff=True))
    account = ImapAccount(login_only_dovecot, login_only_dovecot.new_account(), NON_ASCII)
    mailbox = MailboxFactory.on_dovecot(account, label="Support", smtp_host="")
    response = client.post(
        reverse("admin:mailboxes_mailbox_changelist"),
        {"action": "test_connection", "_selected_action": [mailbox.pk]},
        follow=True,
    )
    assert response.status_code == 200
    messages = [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]
    assert [level for level, _text in messages] == ["error", "error"]
    assert messages[0][1].startswith(
        f"Support: IMAP server 127.0.0.1:{login_only_dovecot.port} does not offer"
    )
    assert not any(char in messages[0][1] for char in NON_ASCII_CHARS)


class _Exploding:
    def items(self):
        raise RuntimeError("form broke")


@pytest.mark.django_db
def test_admin_error_report_of_a_mailbox_post_shows_no_password(client, monkeypatch):
    """Django's error report of a failing change form: neither the POST nor a frame shows it."""
    from tests.mailboxes.test_admin import _mailbox_form_data

    client.force_login(UserFactory(is_superuser=True, is_staff=True))
    mailbox = MailboxFactory(imap_password="old-secret")
    monkeypatch.setattr("mailhub.admin.SERVER_FIELDS", _Exploding())
    reports = []

    def render(sender, request, **kwargs):
        exc_type, exc, tb = sys.exc_info()
        reporter = ExceptionReporter(request, exc_type, exc, tb)
        reports.append(reporter.get_traceback_html() + reporter.get_traceback_text())

    got_request_exception.connect(render)
    try:
        with pytest.raises(RuntimeError, match="form broke"):
            client.post(
                reverse("admin:mailboxes_mailbox_change", args=[mailbox.pk]),
                _mailbox_form_data(mailbox, imap_password="typed-imap-Grüße", smtp_password="typed-smtp"),
            )
    finally:
        got_request_exception.disconnect(render)
    assert len(reports) == 1
    assert "form broke" in reports[0]
    assert "imap_password" in reports[0]  # the POST is listed, its value starred
    for secret in ("typed-imap-Grüße", "typed-smtp", "old-secret"):
        assert secret not in reports[0]
