"""Tests of the real-server fixtures themselves (no Django database involved)."""

import datetime as dt
import imaplib
import shutil
import signal
import smtplib
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

import psycopg
import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from .common import group_members, require_binary
from .dovecot import DOVECOT, PASSWORD, DovecotServer, ImapAccount
from .postgres import PostgresServer, postgres_bindir
from .proxy import CuttingTcpProxy
from .redis import REDIS_SERVER, RedisServer
from .smtp import RecordingSmtpServer

pytestmark = pytest.mark.integration

TESTS_DIR = Path(__file__).resolve().parent.parent


def raw_message(subject: str = "Hello", body_lines: int = 3) -> bytes:
    body = "".join(f"line {i:05d} of the body, with trailing spaces  \r\n" for i in range(body_lines))
    return (
        f"From: Alice <alice@example.test>\r\n"
        f"To: Sales <sales@mailhub.test>\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@example.test>\r\n"
        f"Date: Mon, 02 Jun 2025 10:00:00 +0000\r\n"
        f"\r\n{body}"
    ).encode()


def email_message(subject: str = "Hi") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "mailhub@mailhub.test"
    msg["To"] = "customer@example.test"
    msg["Subject"] = subject
    msg.set_content("Thanks for your message.\n")
    return msg


# -- Dovecot ----------------------------------------------------------------------------------


def test_dovecot_starts_fast(dovecot_server: DovecotServer) -> None:
    assert dovecot_server.startup_seconds < 2.0


def test_dovecot_serves_appended_message_verbatim(imap_account: ImapAccount) -> None:
    raw = raw_message("Verbatim")
    internal = dt.datetime(2025, 6, 2, 10, 0, tzinfo=dt.UTC)
    uid = imap_account.append(raw, flags=[rb"\Flagged"], msg_time=internal)

    with IMAPClient(imap_account.host, imap_account.port, ssl=False, timeout=10) as client:
        client.login(imap_account.username, imap_account.password)
        client.select_folder("INBOX")
        fetched = client.fetch([uid], [b"BODY.PEEK[]", b"INTERNALDATE"])

    assert fetched[uid][b"BODY[]"] == raw
    assert fetched[uid][b"INTERNALDATE"].astimezone(dt.UTC) == internal
    # BODY.PEEK must not have set \Seen.
    assert imap_account.flags() == {uid: (rb"\Flagged",)}
    assert imap_account.messages() == {uid: raw}


def test_each_account_starts_empty(dovecot_server: DovecotServer, imap_account: ImapAccount) -> None:
    imap_account.append(raw_message())
    other = ImapAccount(dovecot_server, dovecot_server.new_account())
    assert other.username != imap_account.username
    assert other.messages() == {}
    assert other.folders() == ["INBOX"]


def test_dovecot_refuses_wrong_password(imap_account: ImapAccount) -> None:
    with IMAPClient(imap_account.host, imap_account.port, ssl=False, timeout=10) as client:
        started = time.monotonic()
        with pytest.raises(LoginError):
            client.login(imap_account.username, PASSWORD + "-wrong")
    # Failed logins are not penalized: repeated failures must not slow the suite down.
    assert time.monotonic() - started < 2.0


def test_recreate_folder_changes_uidvalidity(imap_account: ImapAccount) -> None:
    imap_account.create_folder("Leads")
    imap_account.append(raw_message(), folder="Leads")
    before = imap_account.uidvalidity("Leads")

    after = imap_account.recreate_folder("Leads")

    assert after != before
    assert imap_account.uidvalidity("Leads") == after
    assert imap_account.messages("Leads") == {}
    assert imap_account.append(raw_message(), folder="Leads") == 1


def test_recreate_inbox_changes_uidvalidity(imap_account: ImapAccount) -> None:
    imap_account.create_folder("Leads")
    imap_account.append(raw_message())
    imap_account.append(raw_message("Second"))
    before = imap_account.uidvalidity()

    after = imap_account.recreate_folder("INBOX")

    assert after != before
    assert imap_account.messages() == {}
    # UIDs restart at 1, like in a recreated folder: `UID 2:*` would miss this message.
    assert imap_account.append(raw_message("After reset")) == 1
    assert imap_account.messages() == {1: raw_message("After reset")}
    assert imap_account.uidvalidity() == after
    assert sorted(imap_account.folders()) == ["INBOX", "Leads"]


# -- SMTP -------------------------------------------------------------------------------------


def test_smtp_records_message(smtp_server: RecordingSmtpServer) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
        client.send_message(
            email_message("Auto-reply"), to_addrs=["customer@example.test", "cc@example.test"]
        )

    (received,) = smtp_server.wait_for(1)
    assert received.mail_from == "mailhub@mailhub.test"
    assert received.rcpt_tos == ("customer@example.test", "cc@example.test")
    assert received.message["Subject"] == "Auto-reply"
    assert received.message.get_content() == "Thanks for your message.\n"
    assert received.raw.startswith(b"From: mailhub@mailhub.test\r\n")
    assert received.auth_login is None

    smtp_server.clear()
    assert smtp_server.messages == []


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_smtp_auth(smtp_auth_server: RecordingSmtpServer, mechanism: str) -> None:
    with smtplib.SMTP(smtp_auth_server.host, smtp_auth_server.port, timeout=10) as client:
        client.ehlo()
        client.user, client.password = "smtp-user", PASSWORD
        client.auth(mechanism, getattr(client, f"auth_{mechanism.lower()}"))
        client.send_message(email_message())

    assert smtp_auth_server.wait_for(1)[0].auth_login == "smtp-user"


def test_smtp_auth_refuses_wrong_password_and_anonymous_mail(smtp_auth_server: RecordingSmtpServer) -> None:
    with smtplib.SMTP(smtp_auth_server.host, smtp_auth_server.port, timeout=10) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as excinfo:
            client.login("smtp-user", "wrong")
        assert excinfo.value.smtp_code == 535
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.send_message(email_message())
        assert refused.value.smtp_code == 530
    assert smtp_auth_server.messages == []


def test_smtp_temporary_failures(smtp_server: RecordingSmtpServer) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
        smtp_server.set_failure(451)
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.send_message(email_message())
        assert refused.value.recipients["customer@example.test"][0] == 451

        client.rset()
        smtp_server.set_failure(451, at="data")
        with pytest.raises(smtplib.SMTPDataError) as data_error:
            client.send_message(email_message())
        assert data_error.value.smtp_code == 451

        client.rset()
        smtp_server.set_failure(None)
        client.send_message(email_message("Retried"))

    assert [m.message["Subject"] for m in smtp_server.wait_for(1)] == ["Retried"]


def test_smtp_down_then_up_on_same_port(smtp_server: RecordingSmtpServer) -> None:
    port = smtp_server.port
    smtp_server.stop()
    with pytest.raises(ConnectionRefusedError):
        smtplib.SMTP(smtp_server.host, port, timeout=10)

    smtp_server.start()
    assert smtp_server.port == port
    with smtplib.SMTP(smtp_server.host, port, timeout=10) as client:
        client.send_message(email_message())
    assert len(smtp_server.wait_for(1)) == 1


# -- Redis and PostgreSQL ---------------------------------------------------------------------


def test_redis_ping_and_restart(redis_server: RedisServer) -> None:
    client = redis_server.client()
    assert client.ping()
    client.set("key", "value")
    port = redis_server.port

    redis_server.restart()

    assert redis_server.port == port
    fresh = redis_server.client()
    assert fresh.ping()
    assert fresh.get("key") is None  # no persistence: a restart is a clean slate
    client.close()
    fresh.close()


def test_postgres_accepts_connections(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.execute("SELECT current_database()").fetchone() == ("mailhub",)

    url = postgres_server.create_database("extra_db")
    assert url.endswith("/extra_db")
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("extra_db",)


# -- Proxy ------------------------------------------------------------------------------------


def test_proxy_forwards_then_cuts_mid_fetch(imap_account: ImapAccount, imap_proxy: CuttingTcpProxy) -> None:
    raw = raw_message("Big", body_lines=2000)  # ~100 kB: the cut lands inside the literal
    uid = imap_account.append(raw)

    client = IMAPClient(imap_proxy.host, imap_proxy.port, ssl=False, timeout=10)
    client.login(imap_account.username, imap_account.password)
    client.select_folder("INBOX")
    assert client.fetch([uid], [b"BODY.PEEK[]"])[uid][b"BODY[]"] == raw
    forwarded = imap_proxy.bytes_to_client
    assert forwarded > len(raw)

    imap_proxy.cut_after(1000)
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        client.fetch([uid], [b"BODY.PEEK[]"])

    assert imap_proxy.wait_for_cut(5)
    assert imap_proxy.cuts == 1
    assert imap_proxy.bytes_to_client == forwarded + 1000
    # One-shot: the proxy is disarmed, a reconnection works again.
    with IMAPClient(imap_proxy.host, imap_proxy.port, ssl=False, timeout=10) as again:
        again.login(imap_account.username, imap_account.password)
        again.select_folder("INBOX", readonly=True)
        assert again.fetch([uid], [b"BODY.PEEK[]"])[uid][b"BODY[]"] == raw
    assert imap_account.flags() == {uid: ()}


def test_proxy_persistent_cut_hits_every_connection(
    imap_account: ImapAccount, imap_proxy: CuttingTcpProxy
) -> None:
    imap_proxy.cut_after(10, persistent=True)  # inside the IMAP greeting
    for _ in range(2):
        with pytest.raises((imaplib.IMAP4.abort, OSError)):
            IMAPClient(imap_proxy.host, imap_proxy.port, ssl=False, timeout=10)
    assert imap_proxy.cuts == 2

    imap_proxy.disarm()
    with IMAPClient(imap_proxy.host, imap_proxy.port, ssl=False, timeout=10) as client:
        client.login(imap_account.username, imap_account.password)


def test_proxy_drop_all_resets_open_connections(
    imap_account: ImapAccount, imap_proxy: CuttingTcpProxy
) -> None:
    client = IMAPClient(imap_proxy.host, imap_proxy.port, ssl=False, timeout=10)
    client.login(imap_account.username, imap_account.password)
    imap_proxy.drop_all()
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        client.noop()


# -- Helpers ----------------------------------------------------------------------------------


def test_missing_binary_skips_locally_but_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install no-such-package"):
        require_binary("/usr/sbin/no-such-daemon", "no-such-package")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install no-such-package"):
        require_binary("no-such-daemon", "no-such-package")
    assert require_binary("sh", "dash").endswith("/sh")


# -- Process hygiene --------------------------------------------------------------------------

SERVER_CLASSES = {"dovecot": DovecotServer, "redis": RedisServer, "postgres": PostgresServer}
BINARIES = {
    "dovecot": (DOVECOT, "dovecot-imapd"),
    "redis": (REDIS_SERVER, "redis-server"),
    "postgres": (f"{postgres_bindir()}/postgres", "postgresql"),
}


@pytest.mark.parametrize("kind", SERVER_CLASSES)
def test_stop_leaves_no_process(kind: str) -> None:
    server = SERVER_CLASSES[kind]()
    with server:
        pid = server.pid
        assert pid is not None
        assert group_members(pid)
        base_dir = server.base_dir
    assert group_members(pid) == []
    assert base_dir is not None
    assert not base_dir.exists()


_CHILD = """
import sys, time
sys.path.insert(0, sys.argv[1])
from servers import {cls}
server = {cls}()
server.start()
print(server.pid, server.base_dir, flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("kind", SERVER_CLASSES)
def test_server_dies_with_killed_test_process(kind: str) -> None:
    """A test process killed with SIGKILL runs no teardown: the kernel must stop its servers."""
    require_binary(*BINARIES[kind])  # skip/fail here, not in the child
    code = _CHILD.format(cls=SERVER_CLASSES[kind].__name__)
    child = subprocess.Popen([sys.executable, "-c", code, str(TESTS_DIR)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line, "the child process could not start the server"
        pid_text, base_dir = line.split()
        pid = int(pid_text)
        assert group_members(pid)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    try:
        deadline = time.monotonic() + 10
        while group_members(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert group_members(pid) == []
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)
