"""SQLite with a fair hand-over of the write lock between processes (the embedded mode).

SQLite lets one writer at a time in, and a writer that finds the lock taken waits in SQLite's
busy handler, which sleeps in growing steps (1, 2, 5 ... up to 100 ms) and retries. Under load
that waiter almost never wins: the holder commits and, a few milliseconds later, begins its next
transaction while the waiter is still asleep. Two Celery pool processes then ran one at a time
(`make bench-ingest`: two worker processes kept 1.04 CPUs busy, slower than one).

Every transaction (BEGIN IMMEDIATE, settings.py) first takes an flock on a file next to the
database, polled every millisecond: the lock is handed over within about a millisecond of the
commit, so a waiting process gets its turn between two transactions of the other. Writes
outside a transaction (autocommit statements) keep SQLite's own waiting; they are short.
"""

from __future__ import annotations

import fcntl
import os
import time
from typing import Any

from django.db.backends.sqlite3.base import DatabaseWrapper as SQLiteDatabaseWrapper

# As long as SQLite's own busy timeout would wait (OPTIONS["timeout"]); then SQLite decides.
_POLL_SECONDS = 0.001


class DatabaseWrapper(SQLiteDatabaseWrapper):
    _write_lock_fd: int | None = None
    _write_lock_held = False

    def _start_transaction_under_autocommit(self) -> None:
        self._write_lock_take()
        try:
            super()._start_transaction_under_autocommit()  # type: ignore[misc]  # private: not in django-stubs
        except BaseException:
            self._write_lock_release()
            raise

    def _commit(self) -> Any:
        try:
            return super()._commit()  # type: ignore[misc]  # private: not in django-stubs
        finally:
            self._write_lock_release()

    def _rollback(self) -> Any:
        try:
            return super()._rollback()  # type: ignore[misc]  # private: not in django-stubs
        finally:
            self._write_lock_release()

    def _close(self) -> Any:
        try:
            return super()._close()  # type: ignore[misc]  # private: not in django-stubs
        finally:
            self._write_lock_release()
            if self._write_lock_fd is not None:
                os.close(self._write_lock_fd)
                self._write_lock_fd = None

    def _write_lock_take(self) -> None:
        if self.is_in_memory_db() or self._write_lock_held:
            return
        if self._write_lock_fd is None:
            path = f"{self.settings_dict['NAME']}.writelock"
            self._write_lock_fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        timeout = float(self.settings_dict.get("OPTIONS", {}).get("timeout", 5))
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self._write_lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return  # SQLite's busy timeout decides ("database is locked")
                time.sleep(_POLL_SECONDS)
            else:
                self._write_lock_held = True
                return

    def _write_lock_release(self) -> None:
        if self._write_lock_held and self._write_lock_fd is not None:
            fcntl.flock(self._write_lock_fd, fcntl.LOCK_UN)
        self._write_lock_held = False
