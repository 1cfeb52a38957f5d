"""`make run`: the web server in this process; next to it a Celery worker with embedded beat and
the IMAP IDLE push supervisor (`run_idle_supervisor`, mailhub/idle.py), each its own child.

Stopping (Ctrl-C, SIGTERM, SIGHUP, a closed terminal) stops all three, within a few seconds, and
a repeated signal never leaves a child behind. The same rules hold for both children (below for
the worker; the supervisor's SIGTERM closes its connections and gives its IDLE leases up, and a
killed supervisor's leases expire, MAILHUB_IDLE_LEASE_SECONDS):

- the worker's main process alone gets SIGTERM (Celery's warm shutdown: it stops its pool and
  its beat process itself). Signalling its whole process group instead killed the pool children
  with SIGTERM while one of them held the pool's inqueue read lock (a semaphore shared by the
  pool, not released when its holder dies), and the worker's exit then blocked for ever in
  billiard's `Pool._help_stuff_finish` acquiring that lock: the warm shutdown that "never ends";
- after `--stop-timeout` seconds (a poll still running) the whole group is killed. That is safe:
  every step is claimed in the database, so a killed poll's lease expires
  (MAILHUB_POLL_LEASE_SECONDS) and its mailbox is polled again, a killed processing step is
  enqueued again by the next poll (MAILHUB_REQUEUE_PENDING_AFTER), and an auto-reply killed
  while sending stays "sending" and is never sent a second time automatically;
- a second signal during that wait kills the group at once, and the worker is always waited for;
- PR_SET_PDEATHSIG has the kernel stop the worker even when this process dies by SIGKILL;
- DATA_DIR/run_mailhub.lock is locked (flock) by this process and inherited by the worker and its
  pool, so a second `make run` on the same data refuses to start while any of them lives.
"""

import contextlib
import ctypes
import fcntl
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

_PR_SET_PDEATHSIG = 1
# Ctrl-C in a terminal (SIGINT to the foreground process group: make and this process; the worker
# has its own session), a service manager (SIGTERM), a closed terminal (SIGHUP).
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Command(BaseCommand):
    help = (
        "Run the whole product on one host: a Celery worker with embedded beat (background polling "
        "and sending) and the IMAP IDLE push supervisor next to the web server. Used by `make run`."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--addr", default="127.0.0.1")
        parser.add_argument("--port", default="8000")
        parser.add_argument("--concurrency", type=int, default=2)
        parser.add_argument(
            "--stop-timeout",
            type=float,
            default=5.0,
            help="Seconds the worker's warm shutdown may take (running tasks finish) before it is killed.",
        )

    def handle(
        self, *args: object, addr: str, port: str, concurrency: int, stop_timeout: float, **options: object
    ) -> None:
        settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
        lock_fd = _lock_data_dir()
        worker = _Worker(
            argv=[
                sys.executable,
                "-m",
                "celery",
                "--app",
                "mailhub",
                "worker",
                "--beat",
                f"--schedule={settings.DATA_DIR / 'celerybeat-schedule'}",
                f"--concurrency={concurrency}",
                # Celery sets the root logger to this level in the worker: the same as the web's.
                f"--loglevel={settings.LOG_LEVEL}",
            ],
            stop_timeout=stop_timeout,
            lock_fd=lock_fd,
        )
        # Its polls go to the worker above (the embedded broker), like beat's.
        idle = _Worker(
            argv=[sys.executable, str(settings.BASE_DIR / "manage.py"), "run_idle_supervisor"],
            stop_timeout=stop_timeout,
            lock_fd=lock_fd,
        )
        children = _Children([worker, idle])
        for signum in _STOP_SIGNALS:
            signal.signal(signum, children.on_signal)
        try:
            worker_pid = worker.start()
            idle_pid = idle.start()
            os.ftruncate(lock_fd, 0)
            os.pwrite(lock_fd, f"run_mailhub={os.getpid()} worker={worker_pid} idle={idle_pid}\n".encode(), 0)
            call_command("runserver", f"{addr}:{port}", use_reloader=False)
        finally:
            children.stop()


class _Children:
    """Both children under one set of signal rules: stopped together, within one stop timeout."""

    def __init__(self, children: list["_Worker"]) -> None:
        self.children = children
        self.stopping = False

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            for child in self.children:
                child.kill()
            return
        self.stopping = True
        raise SystemExit(128 + signum)

    def stop(self) -> None:
        self.stopping = True
        # SIGTERM to every main process first, so that they shut down at the same time.
        for child in self.children:
            child.terminate()
        for child in self.children:
            child.stop()


class _Worker:
    """A child's process group (the Celery worker, the IDLE supervisor) and how it is stopped."""

    def __init__(self, *, argv: list[str], stop_timeout: float, lock_fd: int) -> None:
        self.argv = argv
        self.stop_timeout = stop_timeout
        self.lock_fd = lock_fd
        self.process: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.terminated = False

    def start(self) -> int:
        """Start the worker; its pid."""
        # Blocked while the child is forked and `self.process` assigned, so that a signal can't
        # arrive in between and leave a worker nobody stops; the child unblocks them before exec.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            self.process = process = subprocess.Popen(  # noqa: S603 - fixed argv, our own interpreter
                self.argv,
                start_new_session=True,  # its own process group: killed as a whole, pool included
                preexec_fn=_prepare_worker,  # safe: no threads have been started yet
                pass_fds=(self.lock_fd,),  # the lock stays held while any process of the worker lives
            )
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        return process.pid

    def terminate(self) -> None:
        """SIGTERM to the main process only (see the docstring), if it still runs."""
        self.stopping = True  # from here on, any stop signal escalates
        process = self.process
        if process is not None and not _exited_within(process.pid, 0) and not self.terminated:
            self.terminated = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)

    def stop(self) -> None:
        self.terminate()
        process = self.process
        if process is None:
            return
        _exited_within(process.pid, self.stop_timeout)
        # Whatever is left of the group (a stuck main process, a pool child, the beat process).
        # The main process is not reaped yet, so its pid, the group's id, can't have been reused.
        self.kill()
        process.wait()

    def kill(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


def _exited_within(pid: int, seconds: float) -> bool:
    """Whether the process `pid` (a child) exited, without reaping it (WNOWAIT)."""
    deadline = time.monotonic() + seconds
    while True:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _lock_data_dir() -> int:
    """Lock DATA_DIR for this run, or fail if an earlier run (or its worker) still holds it."""
    path = settings.DATA_DIR / "run_mailhub.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        # flock, not a pid file: the kernel releases it when the last process holding it ends,
        # however it ends, so a stale file never blocks and a live worker always does.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown pids"
        os.close(fd)
        raise CommandError(
            f"mailhub is already running on {settings.DATA_DIR} ({holder}): stop it first, "
            "or wait for its worker to finish stopping."
        ) from None
    return fd


def _prepare_worker() -> None:
    """In the worker, before exec."""
    # The parent blocks the stop signals around fork; an exec'd program inherits the mask.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    # The kernel sends the worker SIGTERM if run_mailhub dies, even by SIGKILL, so no orphaned
    # worker keeps polling (Linux; elsewhere a no-op).
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
