"""Scale-out benchmark: the production setup with 1 and then 2 Celery workers, one run.

    python bench/scale.py [--per-mailbox 200]      (or: make bench-scale)

Each round starts from a fresh PostgreSQL database and fresh Dovecot accounts (10 mailboxes:
4 case with an auto-response rule, 3 lead, 3 none), starts beat and N single-process workers on
Redis, activates the mailboxes and measures the time until every email is stored and processed
and every auto-reply has reached the SMTP server. Prints emails/s for 1 and 2 workers and the
ratio. The machine has 2 cores, shared with PostgreSQL, Redis and Dovecot: read the ratio, not
the absolute rates.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.scale.cluster import ScaleCluster, expected_counts
from tests.servers import DovecotServer, PostgresServer, RecordingSmtpServer, RedisServer


def one_round(workers: int, per_mailbox: int, servers: dict) -> float:
    servers["smtp"].clear()
    servers["redis"].flushall()
    cluster = ScaleCluster(**servers, poll_interval=1)
    cluster.prepare(per_mailbox)
    expected = expected_counts(cluster.plans, per_mailbox)
    try:
        cluster.start_beat()
        for index in range(workers):
            cluster.start_worker(f"w{index + 1}")
        time.sleep(3)  # let the workers connect before the clock starts
        started = time.perf_counter()
        cluster.activate()
        cluster.wait_until(
            lambda c: c["processed"] == expected["emails"] and c["smtp_received"] == expected["auto_replies"],
            timeout=900,
        )
        return expected["emails"] / (time.perf_counter() - started)
    finally:
        cluster.stop()
        cluster.remove_files()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-mailbox", type=int, default=200)
    args = parser.parse_args()
    with (
        PostgresServer() as postgres,
        RedisServer() as redis,
        DovecotServer() as dovecot,
        RecordingSmtpServer() as smtp,
    ):
        servers = {"postgres": postgres, "redis": redis, "dovecot": dovecot, "smtp": smtp}
        one = one_round(1, args.per_mailbox, servers)
        two = one_round(2, args.per_mailbox, servers)
    total = 10 * args.per_mailbox
    print()
    print(
        f"10 mailboxes x {args.per_mailbox} messages = {total} emails (stored, processed, auto-replies sent)"
    )
    print(f"1 worker   {one:8.1f} emails/s")
    print(f"2 workers  {two:8.1f} emails/s")
    print(f"2 / 1      {two / one:8.2f}")


if __name__ == "__main__":
    main()
