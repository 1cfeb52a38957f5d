import signal
import subprocess
import sys

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand


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
            ]
        )
        try:
            call_command("runserver", f"{addr}:{port}", use_reloader=False)
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
