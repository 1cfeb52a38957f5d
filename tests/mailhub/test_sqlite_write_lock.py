"""The embedded mode's SQLite hands the write lock over fairly (mailhub/sqlite_backend)."""

import threading
import time

import pytest
from django.db import connection, connections, transaction

from mailboxes.models import Mailbox
from tests.factories import MailboxFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the SQLite write lock")
def test_a_waiting_writer_gets_its_turn_between_two_transactions_of_another():
    mailbox = MailboxFactory()
    commits: list[str] = []
    a_holds = threading.Event()

    def write(name: str, hold: float) -> None:
        with transaction.atomic():
            Mailbox.objects.filter(pk=mailbox.pk).update(label=name)
            a_holds.set()
            time.sleep(hold)
        commits.append(name)

    def a() -> None:
        try:
            for n in range(1, 4):
                write(f"A{n}", 0.3)
                # The few milliseconds between two tasks of a worker: SQLite's busy handler,
                # asleep for up to 100 ms at a time, misses them.
                time.sleep(0.01)
        finally:
            connections.close_all()

    def b() -> None:
        try:
            assert a_holds.wait(5)
            write("B", 0)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert commits == ["A1", "B", "A2", "A3"]
