"""IDLE memory benchmark: resident memory per idling connection of the IDLE gateway, one run.

    python bench/idle.py [--connections 200]      (or: make bench-idle)

Starts a throw-away Dovecot, opens N IDLE connections (mailboxes/idle.py, one account each, one
asyncio task each waiting for the server's next response, as the supervisor holds them) in this
process, and prints the growth of this process's RSS divided by N. The supervisor's own
bookkeeping per mailbox (a dataclass, a dict entry) is of the order of a few hundred bytes more.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailhub.settings_test")


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def measure(host: str, port: int, usernames: list[str], password: str) -> tuple[int, int]:
    from mailboxes.idle import idle_connect
    from mailboxes.imap import ImapSettings
    from mailboxes.tls import Security

    async def hold(connection) -> None:  # type: ignore[no-untyped-def]
        while True:
            await connection.next_event()

    # Warm up (imports, the first connection's caches) before the baseline.
    imap = ImapSettings(
        host=host, port=port, security=Security.NONE, username=usernames[0], password=password
    )
    first = await idle_connect(imap)
    await first.idle()
    gc.collect()
    before = rss_kib()
    connections, tasks = [], []
    for username in usernames[1:]:
        imap = ImapSettings(
            host=host, port=port, security=Security.NONE, username=username, password=password
        )
        connection = await idle_connect(imap)
        await connection.idle()
        connections.append(connection)
        tasks.append(asyncio.create_task(hold(connection)))
    await asyncio.sleep(2)
    gc.collect()
    after = rss_kib()
    for task in tasks:
        task.cancel()
    for connection in [first, *connections]:
        connection.close()
    return after - before, len(connections)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=200)
    args = parser.parse_args()
    import django

    django.setup()
    from tests.servers.dovecot import DovecotServer

    class RoomyDovecot(DovecotServer):
        """The test Dovecot with room for N imap processes (default_process_limit is 100)."""

        def _write_config(self) -> Path:
            config = super()._write_config()
            limit = args.connections + 50
            with config.open("a") as file:
                file.write(f"default_process_limit = {limit}\ndefault_client_limit = {limit * 2}\n")
            return config

    with RoomyDovecot() as server:
        usernames = [server.new_account() for _ in range(args.connections + 1)]
        grown, count = asyncio.run(measure(server.host, server.port, usernames, server.password))
    print(
        f"IDLE memory: {count} idling connections grew RSS by {grown} KiB: "
        f"{grown / count:.1f} KiB per connection (plain IMAP on loopback)"
    )


if __name__ == "__main__":
    main()
