import ctypes
import os
import signal
import subprocess
import sys

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the worker, before exec: the kernel sends it SIGTERM if run_mailhub dies, even by
    SIGKILL, so no orphaned worker keeps polling (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _exit_on_signal(signum: int, frame) -> None:
    # SIGTERM's default action ends the process without running `finally`: turn it into a normal
    # exit so that the worker is stopped.
    raise SystemExit(128 + signum)


class Command(BaseCommand):
    help = (
        "Run the whole product on one host: a Celery worker with embedded beat (background polling "
        "and sending) next to the web server. Used by `make run`."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--addr", default="127.0.0.1")
        parser.add_argument("--port", default="8000")
        parser.add_argument("--concurrency", type=int, default=2)

    def handle(self, *args, addr: str, port: str, concurrency: int, **options) -> None:
        schedule_file = settings.DATA_DIR / "celerybeat-schedule"
        settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _exit_on_signal)
        worker = subprocess.Popen(  # noqa: S603 - fixed argv, our own interpreter
            [
                sys.executable,
                "-m",
                "celery",
                "--app",
                "mailhub",
                "worker",
                "--beat",
                f"--schedule={schedule_file}",
                f"--concurrency={concurrency}",
                "--loglevel=INFO",
            ],
            start_new_session=True,  # its own process group: stopped as a whole, pool included
            preexec_fn=_die_with_parent,  # safe: no threads have been started yet
        )
        try:
            call_command("runserver", f"{addr}:{port}", use_reloader=False)
        finally:
            _stop(worker)


def _stop(worker: subprocess.Popen) -> None:
    """Warm shutdown first (running tasks finish), then the whole group is killed."""
    try:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(worker.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    worker.wait(timeout=10)
