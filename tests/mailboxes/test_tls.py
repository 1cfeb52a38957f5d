"""IMAP and SMTP over TLS against real servers whose certificate comes from a private CA.

Dovecot (`dovecot_tls_server`) offers STARTTLS on its plain port and implicit TLS on `tls_port`;
the aiosmtpd servers offer STARTTLS or speak implicit TLS. Their certificate (tests/servers/tls.py)
is signed by a throw-away CA that only MAILHUB_TLS_CA_FILE makes trusted.
"""

import time

import pytest

from mailboxes.imap import ImapSettings, imap_check_connection
from mailboxes.models import Email, Mailbox, TransportSecurity
from mailboxes.services import mailbox_poll
from mailboxes.services.connection import ConnectionCheck, mailbox_test_connection
from mailboxes.smtp import SmtpError, SmtpSettings, smtp_check_connection, smtp_send_raw
from mailboxes.tls import Security, verifying_context
from tests.factories import MailboxFactory
from tests.servers import PASSWORD, DovecotServer, ImapAccount, RecordingSmtpServer, TlsFiles

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

UNTRUSTED = "self-signed certificate in certificate chain"
NO_CA_HINT = (
    " (issuer not trusted: not a system CA; if the server's certificate comes from a private CA, "
    "set MAILHUB_TLS_CA_FILE to that CA's PEM file)"
)
RAW = (
    b"From: support@example.com\r\n"
    b"To: customer@example.test\r\n"
    b"Subject: Over TLS\r\n"
    b"Message-ID: <tls-1@example.com>\r\n"
    b"\r\n"
    b"Sent through an encrypted connection.\r\n"
)


@pytest.fixture(autouse=True)
def _fresh_tls_contexts():
    # Verifying contexts are cached per process (the system CA store is read once); these tests
    # change the trusted CAs between them, so each starts from a fresh cache.
    verifying_context.cache_clear()
    yield
    verifying_context.cache_clear()


def make_message(subject: str) -> bytes:
    return (
        "From: Sender <sender@example.com>\r\n"
        "To: support@example.com\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@example.com>\r\n"
        "Date: Mon, 2 Nov 2026 10:00:00 +0000\r\n"
        "\r\n"
        "Hello over TLS.\r\n"
    ).encode()


@pytest.fixture
def tls_account(dovecot_tls_server: DovecotServer) -> ImapAccount:
    return ImapAccount(dovecot_tls_server, dovecot_tls_server.new_account())


@pytest.fixture
def trust_private_ca(settings, tls_files: TlsFiles) -> None:
    settings.MAILHUB_TLS_CA_FILE = str(tls_files.ca_file)


def ports(server: DovecotServer) -> dict[str, int]:
    """The port that goes with each TLS security setting on the TLS Dovecot."""
    assert server.tls_port is not None
    return {"ssl": server.tls_port, "starttls": server.port}


def imap_mailbox(account: ImapAccount, *, port: int, security: str, **smtp):
    return MailboxFactory.on_dovecot(
        account, imap_port=port, imap_security=security, history_import="none", **smtp
    )


def tls_logins(server: DovecotServer, username: str, expected: int, timeout: float = 5.0) -> int:
    """How many logins of `username` Dovecot logged as encrypted, once it logged `expected`.

    Dovecot writes "Login: user=<name>, ..., TLS, ..." for TLS sessions ("secured" for plain
    loopback ones, like those of the account helpers). Its log process writes asynchronously.
    """
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in server.log_text().splitlines() if f"Login: user=<{username}>," in line]
        count = sum(1 for line in lines if ", TLS," in line)
        if count >= expected or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


# -- IMAP ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_imap_poll_over_tls_with_private_ca(
    security, trust_private_ca, tls_account, dovecot_tls_server
) -> None:
    mailbox = imap_mailbox(tls_account, port=ports(dovecot_tls_server)[security], security=security)
    first = mailbox_poll(mailbox_id=mailbox.pk)
    assert (first.error, first.new_email_ids) == ("", [])
    tls_account.append(make_message(f"Hello {security}"))

    result = mailbox_poll(mailbox_id=mailbox.pk)

    assert result.error == ""
    assert len(result.new_email_ids) == 1
    assert list(Email.objects.values_list("subject", flat=True)) == [f"Hello {security}"]
    # Both polls logged in over TLS (STARTTLS is not silently skipped).
    assert tls_logins(dovecot_tls_server, tls_account.username, expected=2) == 2


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_test_connection_over_tls_for_imap_and_smtp(
    security, trust_private_ca, tls_account, dovecot_tls_server, smtp_starttls_server, smtp_tls_server
) -> None:
    imap_port = ports(dovecot_tls_server)[security]
    smtp_server = smtp_tls_server if security == "ssl" else smtp_starttls_server
    mailbox = imap_mailbox(
        tls_account,
        port=imap_port,
        security=security,
        smtp_host=smtp_server.host,
        smtp_port=smtp_server.port,
        smtp_security=security,
        smtp_username="smtp-user",
        smtp_password=PASSWORD,
    )

    imap_check, smtp_check = mailbox_test_connection(mailbox=mailbox)

    assert imap_check.ok, imap_check.message
    assert imap_check.message.startswith(
        f"IMAP OK: logged in to 127.0.0.1:{imap_port} as {tls_account.username!r}, folder 'INBOX' has 0 "
    )
    assert smtp_check == ConnectionCheck(
        "SMTP", True, f"SMTP OK: connected to 127.0.0.1:{smtp_server.port} as 'smtp-user', NOOP answered 250."
    )


@pytest.mark.parametrize("security", ["ssl", "starttls"])
@pytest.mark.parametrize("trusted", ["system CAs only", "unrelated CA"])
def test_imap_certificate_of_private_ca_is_rejected_unless_trusted(
    security, trusted, settings, tls_files, tls_account, dovecot_tls_server
) -> None:
    if trusted == "system CAs only":
        settings.MAILHUB_TLS_CA_FILE = ""
        hint = NO_CA_HINT
    else:
        settings.MAILHUB_TLS_CA_FILE = str(tls_files.other_ca_file)
        hint = (
            f" (issuer not trusted: neither a system CA nor in the CA file {str(tls_files.other_ca_file)!r}, "
        )
    port = ports(dovecot_tls_server)[security]
    mailbox = imap_mailbox(tls_account, port=port, security=security)
    tls_account.append(make_message("Never fetched"))

    result = mailbox_poll(mailbox_id=mailbox.pk)

    assert result.error.startswith(f"IMAP TLS certificate of 127.0.0.1:{port} rejected: {UNTRUSTED}{hint}")
    assert result.error_is_permanent is True
    assert Email.objects.count() == 0
    mailbox.refresh_from_db()
    assert mailbox.last_error == result.error


def test_extra_ca_file_keeps_the_system_cas(
    monkeypatch, settings, tls_files, tls_account, dovecot_tls_server
) -> None:
    # Make the private CA a "system" CA (OpenSSL's default CA file) and configure the unrelated
    # one as the extra file: the server must still be trusted, through the system store.
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files.ca_file))
    settings.MAILHUB_TLS_CA_FILE = str(tls_files.other_ca_file)
    assert dovecot_tls_server.tls_port is not None

    checks = mailbox_test_connection(
        mailbox=imap_mailbox(tls_account, port=dovecot_tls_server.tls_port, security="ssl", smtp_host="")
    )

    assert checks[0].ok, checks[0].message
    assert checks[0].message.startswith(f"IMAP OK: logged in to 127.0.0.1:{dovecot_tls_server.tls_port} ")


def test_imap_starttls_by_host_name(tls_files, tls_account, dovecot_tls_server) -> None:
    imap = ImapSettings(
        host="localhost",  # the certificate's DNS name (the other tests use its IP address)
        port=dovecot_tls_server.port,
        security="starttls",
        username=tls_account.username,
        password=tls_account.password,
        timeout=10,
        ca_file=str(tls_files.ca_file),
    )
    assert imap_check_connection(imap).startswith(f"IMAP OK: logged in to localhost:{imap.port} ")


def test_imap_ssl_against_plain_port_names_the_setting(trust_private_ca, imap_account) -> None:
    mailbox = imap_mailbox(imap_account, port=imap_account.port, security="ssl")

    result = mailbox_poll(mailbox_id=mailbox.pk)

    assert result.error.startswith(
        f"IMAP server 127.0.0.1:{imap_account.port} did not answer in TLS: security setting mismatch? "
        "'ssl' is implicit TLS (usually port 993); a plain port (usually 143) needs 'starttls' ([SSL: "
    )
    assert result.error_is_permanent is True


@pytest.mark.parametrize("security", ["none", "starttls"])
def test_imap_plain_text_against_implicit_tls_port_names_the_setting(
    security, settings, trust_private_ca, tls_account, dovecot_tls_server
) -> None:
    settings.MAILHUB_NETWORK_TIMEOUT = 1.0  # the greeting never comes: this is how long we wait
    mailbox = imap_mailbox(tls_account, port=dovecot_tls_server.tls_port, security=security)

    result = mailbox_poll(mailbox_id=mailbox.pk)

    assert result.error == (
        f"IMAP server 127.0.0.1:{dovecot_tls_server.tls_port} expects TLS from the first byte (no "
        "plain-text greeting): security setting mismatch? This port needs 'ssl' (implicit TLS)"
    )
    assert result.error_is_permanent is True


def test_imap_starttls_not_offered_is_permanent_and_sends_no_password(
    trust_private_ca, imap_account, dovecot_server
) -> None:
    # The plain fixture server runs with `ssl = no`: no STARTTLS capability.
    mailbox = imap_mailbox(imap_account, port=imap_account.port, security="starttls")

    result = mailbox_poll(mailbox_id=mailbox.pk)

    assert result.error == (
        f"IMAP server 127.0.0.1:{imap_account.port} does not offer STARTTLS (the password was not "
        "sent): use 'ssl' with its implicit-TLS port (usually 993) if it has one"
    )
    assert result.error_is_permanent is True
    time.sleep(0.2)  # let Dovecot's log process catch up: a login attempt would be logged
    assert f"user=<{imap_account.username}>" not in dovecot_server.log_text()


def test_missing_ca_file_is_a_permanent_error(settings, tls_account, dovecot_tls_server) -> None:
    settings.MAILHUB_TLS_CA_FILE = "/nonexistent/company-ca.pem"
    mailbox = imap_mailbox(tls_account, port=dovecot_tls_server.tls_port, security="ssl")

    result = mailbox_poll(mailbox_id=mailbox.pk)

    assert result.error.startswith(
        "IMAP TLS CA file '/nonexistent/company-ca.pem' (MAILHUB_TLS_CA_FILE) could not be loaded: "
    )
    assert result.error_is_permanent is True


# -- SMTP ---------------------------------------------------------------------------------------


def smtp_settings(
    server: RecordingSmtpServer, security: str, *, host: str = "127.0.0.1", **extra
) -> SmtpSettings:
    return SmtpSettings(
        host=host,
        port=server.port,
        security=security,
        username="smtp-user",
        password=PASSWORD,
        timeout=10,
        **extra,
    )


@pytest.fixture(params=["starttls", "ssl"])
def smtp_tls(request) -> tuple[str, RecordingSmtpServer]:
    """(security, server) for both TLS flavours, the server requiring AUTH."""
    fixture = {"starttls": "smtp_starttls_server", "ssl": "smtp_tls_server"}[request.param]
    return request.param, request.getfixturevalue(fixture)


def test_smtp_sends_over_tls_with_login(smtp_tls, tls_files) -> None:
    security, server = smtp_tls
    smtp = smtp_settings(server, security, ca_file=str(tls_files.ca_file))

    smtp_send_raw(smtp, sender="support@example.com", recipients=["customer@example.test"], message=RAW)

    (received,) = server.wait_for(1)
    assert (received.mail_from, received.rcpt_tos) == ("support@example.com", ("customer@example.test",))
    assert received.raw == RAW
    assert received.auth_login == "smtp-user"
    assert smtp_check_connection(smtp) == (
        f"SMTP OK: connected to 127.0.0.1:{server.port} as 'smtp-user', NOOP answered 250."
    )


@pytest.mark.parametrize("trusted", ["system CAs only", "unrelated CA"])
def test_smtp_certificate_of_private_ca_is_rejected_unless_trusted(smtp_tls, trusted, tls_files) -> None:
    security, server = smtp_tls
    ca_file = "" if trusted == "system CAs only" else str(tls_files.other_ca_file)
    hint = (
        NO_CA_HINT
        if not ca_file
        else f" (issuer not trusted: neither a system CA nor in the CA file {ca_file!r}, "
    )

    with pytest.raises(SmtpError) as excinfo:
        smtp_send_raw(
            smtp_settings(server, security, ca_file=ca_file),
            sender="support@example.com",
            recipients=["customer@example.test"],
            message=RAW,
        )

    assert str(excinfo.value).startswith(
        f"SMTP TLS certificate of 127.0.0.1:{server.port} rejected: {UNTRUSTED}{hint}"
    )
    assert excinfo.value.permanent is True
    assert server.messages == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_smtp_certificate_for_another_host_is_rejected(host, tls_files) -> None:
    with RecordingSmtpServer(tls=tls_files, implicit_tls=True, wrong_host=True) as server:
        smtp = SmtpSettings(
            host=host, port=server.port, security="ssl", timeout=10, ca_file=str(tls_files.ca_file)
        )
        with pytest.raises(SmtpError) as excinfo:
            smtp_check_connection(smtp)

    mismatch = "IP address mismatch" if host == "127.0.0.1" else "Hostname mismatch"
    assert str(excinfo.value) == (
        f"SMTP TLS certificate of {host}:{server.port} rejected: "
        f"{mismatch}, certificate is not valid for '{host}'."
    )
    assert excinfo.value.permanent is True


def test_smtp_starttls_not_offered_is_permanent_and_sends_no_password(smtp_auth_server, tls_files) -> None:
    smtp = smtp_settings(smtp_auth_server, "starttls", ca_file=str(tls_files.ca_file))

    with pytest.raises(SmtpError) as excinfo:
        smtp_send_raw(smtp, sender="support@example.com", recipients=["customer@example.test"], message=RAW)

    assert str(excinfo.value) == (
        f"SMTP server 127.0.0.1:{smtp_auth_server.port} does not offer STARTTLS (the password was not "
        "sent): use 'ssl' with its implicit-TLS port (usually 465) if it has one"
    )
    assert excinfo.value.permanent is True
    assert smtp_auth_server.messages == []


def test_smtp_ssl_against_plain_port_names_the_setting(smtp_starttls_server, tls_files) -> None:
    smtp = smtp_settings(smtp_starttls_server, "ssl", ca_file=str(tls_files.ca_file))

    with pytest.raises(SmtpError) as excinfo:
        smtp_check_connection(smtp)

    assert str(excinfo.value).startswith(
        f"SMTP server 127.0.0.1:{smtp_starttls_server.port} did not answer in TLS: security setting "
        "mismatch? 'ssl' is implicit TLS (usually port 465); a plain port (usually 587 or 25) needs "
        "'starttls' ([SSL: "
    )
    assert excinfo.value.permanent is True


@pytest.mark.parametrize("security", ["none", "starttls"])
def test_smtp_plain_text_against_implicit_tls_port_names_the_setting(
    security, smtp_tls_server, tls_files
) -> None:
    smtp = SmtpSettings(
        host="127.0.0.1",
        port=smtp_tls_server.port,
        security=security,
        timeout=1.0,
        ca_file=str(tls_files.ca_file),
    )

    with pytest.raises(SmtpError) as excinfo:
        smtp_check_connection(smtp)

    assert str(excinfo.value) == (
        f"SMTP server 127.0.0.1:{smtp_tls_server.port} expects TLS from the first byte (no plain-text "
        "greeting): security setting mismatch? This port needs 'ssl' (implicit TLS)"
    )
    assert excinfo.value.permanent is True


def test_mailbox_settings_carry_the_gateways_security_enum():
    assert [(c.value, c.label) for c in TransportSecurity] == [
        (Security.SSL, "SSL/TLS (implicit)"),
        (Security.STARTTLS, "STARTTLS"),
        (Security.NONE, "None (plain text; loopback or trusted network only)"),
    ]
    mailbox = Mailbox(imap_security="starttls", smtp_security="none", imap_password="", smtp_password="")
    assert mailbox.imap_settings().security is Security.STARTTLS
    assert mailbox.smtp_settings().security is Security.NONE
