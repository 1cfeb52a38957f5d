"""The IDLE gateway (mailboxes/idle.py) against the misbehaving fake server: bounded, clean errors."""

import asyncio
import resource

import pytest

from mailboxes.idle import DEFAULT_MAX_LINE, idle_connect
from mailboxes.imap import ImapError, ImapSettings
from mailboxes.tls import Security
from tests.servers.fake_imap import FakeImapServer


def settings_for(server: FakeImapServer, *, timeout: float = 5.0) -> ImapSettings:
    return ImapSettings(
        host=server.host,
        port=server.port,
        security=Security.NONE,
        username="user",
        password="pw",
        timeout=timeout,
    )


def test_a_server_without_idle_is_reported_as_such():
    with FakeImapServer() as server:

        async def connect() -> bool:
            connection = await idle_connect(settings_for(server))
            await connection.logout()
            return connection.supports_idle

        assert asyncio.run(connect()) is False
        assert "IDLE " not in server.commands


def test_idle_then_done_on_a_server_with_idle():
    with FakeImapServer(idle=True) as server:

        async def idle_once() -> int:
            connection = await idle_connect(settings_for(server))
            await connection.idle()
            await connection.done()
            await connection.logout()
            return connection.idle_commands

        assert asyncio.run(idle_once()) == 1
        assert [command.split()[0] for command in server.commands] == [
            "LOGIN",
            "CAPABILITY",
            "SELECT",
            "IDLE",
            "DONE",
            "LOGOUT",
        ]


def test_a_huge_line_ends_the_connection_without_buffering_it():
    huge = 50 * 1024 * 1024
    with FakeImapServer(idle=True, idle_line=b"* " + b"x" * huge + b"\r\n") as server:
        peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        async def read_event() -> None:
            connection = await idle_connect(settings_for(server))
            await connection.idle()
            try:
                await connection.next_event()
            finally:
                connection.close()

        with pytest.raises(ImapError, match=f"line longer than {DEFAULT_MAX_LINE} bytes") as caught:
            asyncio.run(read_event())
        assert caught.value.permanent is False
        # The server's 50 MB line (plus its own copy in this process) never grew our buffer.
        grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
        assert grown_kib < 60 * 1024 + 20 * 1024


def test_a_huge_literal_is_refused_before_it_is_read():
    with FakeImapServer(idle=True, idle_line=b"* 1 FETCH (BODY[] {999999999}\r\n") as server:

        async def read_event() -> None:
            connection = await idle_connect(settings_for(server))
            await connection.idle()
            try:
                await connection.next_event()
            finally:
                connection.close()

        with pytest.raises(ImapError, match="literal of 999999999 bytes"):
            asyncio.run(read_event())


def test_a_small_literal_is_read_as_part_of_its_line():
    line = b"* 1 FETCH (BODY[] {5}\r\nhello)\r\n* 2 EXISTS\r\n"
    with FakeImapServer(idle=True, idle_line=line) as server:

        async def read_events() -> list[tuple[bytes, int | None]]:
            connection = await idle_connect(settings_for(server))
            await connection.idle()
            events = [await connection.next_event(), await connection.next_event()]
            connection.close()
            return [(event.line, event.exists) for event in events]

        assert asyncio.run(read_events()) == [(b"* 1 FETCH (BODY[] {5}\r\nhello)", None), (b"* 2 EXISTS", 2)]


def test_a_silent_server_never_answers_done():
    with FakeImapServer(idle=True, idle_silent=True) as server:

        async def probe() -> None:
            connection = await idle_connect(settings_for(server))
            await connection.idle()
            try:
                await asyncio.wait_for(connection.done(), 0.5)
            finally:
                connection.close()

        with pytest.raises(TimeoutError):
            asyncio.run(probe())
