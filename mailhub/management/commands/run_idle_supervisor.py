"""`manage.py run_idle_supervisor`: the IMAP IDLE push supervisor (mailhub/idle.py), one process.

SIGTERM / SIGINT / SIGHUP stop it within a second: its connections are closed and its IDLE
leases given up, so that another supervisor can take the mailboxes over at once (a killed one's
leases simply expire); an inline poll already running finishes first.
"""

import asyncio
import signal

from django.core.management.base import BaseCommand, CommandParser

from mailhub.idle import IdleSupervisor, inline_poll, queued_poll

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Command(BaseCommand):
    help = (
        "Hold an IMAP IDLE connection per active mailbox whose server offers IDLE, and poll a "
        "mailbox as soon as its server reports new mail (enqueued to the worker, or --inline)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--inline",
            action="store_true",
            help="Run the polls (and their processing and replies) in this process instead of "
            "enqueueing them to the Celery worker.",
        )

    def handle(self, *args: object, inline: bool, **options: object) -> None:
        asyncio.run(_run(inline=inline))


async def _run(*, inline: bool) -> None:
    supervisor = IdleSupervisor(poll=inline_poll() if inline else queued_poll())
    loop = asyncio.get_running_loop()
    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, supervisor.stop)
    await supervisor.run()
