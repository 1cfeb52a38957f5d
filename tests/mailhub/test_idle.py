"""The IDLE push supervisor (mailhub/idle.py) against a real Dovecot, and the fake server."""

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from django.db import connections

from mailboxes.models import Email, Mailbox
from mailboxes.services import mailboxes_claim_due_polls
from mailhub.idle import IdleSupervisor, inline_poll
from tests.factories import MailboxFactory
from tests.servers.dovecot import DovecotServer, ImapAccount
from tests.servers.fake_imap import FakeImapServer
from tests.servers.proxy import CuttingTcpProxy

pytestmark = [pytest.mark.django_db(transaction=True)]


def message(n: int) -> bytes:
    return (
        f"From: Sender {n} <sender{n}@example.com>\r\nTo: support@example.com\r\n"
        f"Subject: Push {n}\r\nMessage-ID: <push-{n}@example.com>\r\n"
        "Date: Mon, 2 Nov 2026 10:00:00 +0000\r\n\r\nHello.\r\n"
    ).encode()


class RunningSupervisor:
    """An IdleSupervisor on its own event loop in a thread; polls inline, each one recorded."""

    def __init__(self, *, poll_seconds: float = 0.0) -> None:
        self.poll_seconds = poll_seconds  # at least this long per poll: arrivals pile up meanwhile
        self.polls: list[tuple[str, int, float]] = []  # ("start" | "end", mailbox id, monotonic)
        self.supervisor: IdleSupervisor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        base = inline_poll(threads=2)

        async def poll(mailbox_id: int) -> None:
            self.polls.append(("start", mailbox_id, time.monotonic()))
            try:
                await asyncio.gather(base(mailbox_id), asyncio.sleep(self.poll_seconds))
            finally:
                self.polls.append(("end", mailbox_id, time.monotonic()))

        self._loop = asyncio.get_running_loop()
        self.supervisor = IdleSupervisor(poll=poll)
        self._ready.set()
        await self.supervisor.run()

    def start(self) -> "RunningSupervisor":
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        if self._loop is not None and self.supervisor is not None:
            self._loop.call_soon_threadsafe(self.supervisor.stop)
        self._thread.join(30)
        assert not self._thread.is_alive()

    def ended_polls(self, mailbox_id: int) -> int:
        return sum(1 for kind, box, _ in self.polls if kind == "end" and box == mailbox_id)


@pytest.fixture
def fast_idle(settings):
    settings.MAILHUB_IDLE_REFRESH_SECONDS = 0.3
    settings.MAILHUB_IDLE_LEASE_SECONDS = 5
    settings.MAILHUB_IDLE_RECONNECT_FIRST = 0.2
    settings.MAILHUB_NETWORK_TIMEOUT = 3.0
    return settings


@pytest.fixture
def run_supervisor(fast_idle) -> Iterator[Callable[..., RunningSupervisor]]:
    started: list[RunningSupervisor] = []

    def start(**options: float) -> RunningSupervisor:
        running = RunningSupervisor(**options).start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()
    connections.close_all()


def wait_until(condition: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def live(mailbox: Mailbox) -> bool:
    return Mailbox.objects.filter(pk=mailbox.pk, idle_live=True).exists()


def idle_and_caught_up(running: RunningSupervisor, mailbox: Mailbox, polls: int = 1) -> None:
    """Idling, and the poll that follows each (re)connection ended."""
    wait_until(lambda: live(mailbox) and running.ended_polls(mailbox.pk) >= polls)


def stored(message_id: str) -> bool:
    return Email.objects.filter(message_id=message_id).exists()


# -- against Dovecot ---------------------------------------------------------------------------------


@pytest.mark.integration
def test_an_append_is_pushed_and_stored_within_seconds(imap_account, run_supervisor):
    mailbox = MailboxFactory.on_dovecot(imap_account)
    running = run_supervisor()
    idle_and_caught_up(running, mailbox)
    appended = time.monotonic()
    imap_account.append(message(1))
    wait_until(lambda: stored("<push-1@example.com>"), timeout=10)
    assert time.monotonic() - appended < 5
    assert Email.objects.get(message_id="<push-1@example.com>").is_history is False
    # The catch-up after connecting, then the push (its end is recorded after the commit).
    wait_until(lambda: running.ended_polls(mailbox.pk) == 2)
    time.sleep(0.5)
    assert running.ended_polls(mailbox.pk) == 2


@pytest.mark.integration
def test_reconnects_after_dovecot_is_killed_and_restarted(fast_idle, run_supervisor):
    with DovecotServer() as server:
        account = ImapAccount(server, server.new_account())
        mailbox = MailboxFactory.on_dovecot(account)
        running = run_supervisor()
        idle_and_caught_up(running, mailbox)
        server.stop()  # SIGKILL of the whole server: the IDLE connection is reset
        wait_until(lambda: not live(mailbox))
        server.start()  # same port, empty mail store
        idle_and_caught_up(running, mailbox, polls=2)
        account.append(message(2))
        wait_until(lambda: stored("<push-2@example.com>"), timeout=10)
        running.stop()  # while its Dovecot still runs


@pytest.mark.integration
def test_idle_is_reissued_on_the_same_connection_with_a_short_renew(imap_account, fast_idle, run_supervisor):
    fast_idle.MAILHUB_IDLE_RENEW_SECONDS = 0.5
    with CuttingTcpProxy(imap_account.host, imap_account.port) as proxy:
        mailbox = MailboxFactory.on_dovecot(imap_account, imap_port=proxy.port)
        running = run_supervisor()
        idle_and_caught_up(running, mailbox)
        time.sleep(3)
        # Renewed (about 6 times in 3 s), on one connection: no reconnect in between.
        assert proxy.idle_commands >= 4
        assert proxy.connections_accepted == 1 + running.ended_polls(mailbox.pk)  # each poll logs in
        # Still pushing after the renewals.
        imap_account.append(message(3))
        wait_until(lambda: stored("<push-3@example.com>"), timeout=10)


@pytest.mark.integration
def test_a_burst_of_50_appends_gives_one_poll_at_a_time_and_a_last_one_after(imap_account, run_supervisor):
    mailbox = MailboxFactory.on_dovecot(imap_account)
    running = run_supervisor(poll_seconds=1.0)
    idle_and_caught_up(running, mailbox)
    before = len(running.polls)
    with imap_account.client() as client:
        for n in range(50):
            client.append("INBOX", message(100 + n))
            time.sleep(0.1)  # 5 s of arrivals: Dovecot reports several during each poll
        last_append = time.monotonic()
    wait_until(lambda: Email.objects.filter(mailbox=mailbox).count() == 50, timeout=30)
    time.sleep(2)  # a poll asked for by the last EXISTS has time to show up
    burst = running.polls[before:]
    kinds = [kind for kind, _, _ in burst]
    # Never two at once: start, end, start, end ...
    assert kinds == ["start", "end"] * (len(kinds) // 2)
    polls = len(kinds) // 2
    assert 1 <= polls < 50
    # One poll started after the last arrival (Dovecot reports within its 1 s check interval).
    assert max(moment for kind, _, moment in burst if kind == "start") > last_append - 1.5
    assert Email.objects.filter(mailbox=mailbox, is_history=False).count() == 50


@pytest.mark.integration
def test_two_supervisors_never_hold_the_same_mailbox(dovecot_server, run_supervisor):
    accounts = [ImapAccount(dovecot_server, dovecot_server.new_account()) for _ in range(2)]
    mailboxes = [MailboxFactory.on_dovecot(account) for account in accounts]
    first, second = run_supervisor(), run_supervisor()
    wait_until(lambda: all(live(mailbox) for mailbox in mailboxes))
    overlaps = []
    deadline = time.monotonic() + 2  # several refreshes of both, each trying to claim every mailbox
    while time.monotonic() < deadline:
        overlaps.append(set(first.supervisor.held) & set(second.supervisor.held))
        time.sleep(0.02)
    assert [overlap for overlap in overlaps if overlap] == []
    # One IDLE connection per mailbox all along: nobody took a mailbox over and reconnected.
    assert first.supervisor.idle_commands + second.supervisor.idle_commands == 2
    held = [set(first.supervisor.held), set(second.supervisor.held)]
    assert held[0] | held[1] == {mailbox.pk for mailbox in mailboxes}
    tokens = dict(Mailbox.objects.values_list("pk", "idle_lease_token"))
    for supervisor in (first.supervisor, second.supervisor):
        assert {pk for pk, token in tokens.items() if token == supervisor.token} == set(supervisor.held)
    # The one that stops gives its mailboxes up, and the other takes them over.
    first.stop()
    wait_until(lambda: set(second.supervisor.held) == {mailbox.pk for mailbox in mailboxes})
    wait_until(lambda: all(live(mailbox) for mailbox in mailboxes))


@pytest.mark.integration
def test_while_idle_is_live_polling_is_only_the_safety_net(imap_account, run_supervisor, fast_idle):
    fast_idle.MAILHUB_IDLE_SAFETY_POLL_SECONDS = 900
    mailbox = MailboxFactory.on_dovecot(imap_account, poll_interval=1)
    running = run_supervisor()
    idle_and_caught_up(running, mailbox)
    Mailbox.objects.filter(pk=mailbox.pk).update(next_poll_at=None)
    assert mailboxes_claim_due_polls() == []
    running.stop()  # leases given up: not live any more
    assert mailboxes_claim_due_polls() == [mailbox.pk]


@pytest.mark.integration
def test_a_deactivated_mailbox_is_let_go(imap_account, run_supervisor):
    mailbox = MailboxFactory.on_dovecot(imap_account)
    running = run_supervisor()
    idle_and_caught_up(running, mailbox)
    Mailbox.objects.filter(pk=mailbox.pk).update(is_active=False)
    wait_until(lambda: mailbox.pk not in running.supervisor.held)
    # Released before it leaves `held`: no wait needed between the two.
    assert Mailbox.objects.filter(pk=mailbox.pk, idle_lease_token="", idle_live=False).exists()


# -- against the fake server ---------------------------------------------------------------------------


def fake_mailbox(server: FakeImapServer) -> Mailbox:
    return MailboxFactory(imap_host=server.host, imap_port=server.port, imap_security="none")


def test_a_mailbox_whose_server_lacks_idle_is_left_to_polling(run_supervisor):
    with FakeImapServer() as server:
        mailbox = fake_mailbox(server)
        running = run_supervisor()
        wait_until(lambda: running.supervisor.status().without_idle == [mailbox.pk])
        time.sleep(1)  # several refreshes: checked once, not again
        assert [command.split()[0] for command in server.commands].count("LOGIN") == 1
        assert not live(mailbox)
        assert running.polls == []


def test_a_silent_connection_is_detected_dead_and_reconnected(run_supervisor, fast_idle):
    fast_idle.MAILHUB_IDLE_DEAD_AFTER = 0.5
    fast_idle.MAILHUB_NETWORK_TIMEOUT = 0.5
    with FakeImapServer(idle=True, idle_silent=True) as server:
        mailbox = fake_mailbox(server)
        running = run_supervisor()
        wait_until(lambda: server.commands.count("DONE") >= 3)
        names = [command for command in server.commands if command in ("IDLE ", "DONE")]
        # Each connection: IDLE, silence for DEAD_AFTER, DONE unanswered -> dropped; then a new
        # connection (polls in between log in too, hence only IDLE and DONE are compared).
        assert names[:6] == ["IDLE ", "DONE"] * 3
        assert running.supervisor is not None
        assert mailbox.pk in running.supervisor.held


@pytest.mark.integration
def test_an_oauth2_mailbox_idles_with_its_access_token(
    run_supervisor, dovecot_oauth_server, oauth_keys, client
):
    from tests.factories import UserFactory
    from tests.mailboxes.test_oauth_tokens import _connect, _first_contact, _mailbox
    from tests.servers import LocalOAuthServer

    client.force_login(UserFactory(username="root", is_superuser=True, is_staff=True))
    with LocalOAuthServer(oauth_keys, username="idle-oauth@mailhub.test") as idp:
        mailbox, grant = _mailbox(dovecot_oauth_server, idp)
        _connect(client, grant, idp)
        _first_contact(mailbox)
        running = run_supervisor()
        idle_and_caught_up(running, mailbox)
        dovecot_oauth_server.append(idp.username, message(901))
        wait_until(lambda: stored("<push-901@example.com>"))
