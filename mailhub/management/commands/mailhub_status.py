import json
from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from mailhub.status import MailboxStatus, mailbox_statuses

ERROR_WIDTH = 60


def _duration(seconds: float) -> str:
    """12s, 4m05s, 3h07m, 2d05h: short enough for a column, exact enough to act on."""
    seconds = int(abs(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _ago(moment: datetime | None, now: datetime) -> str:
    return "never" if moment is None else f"{_duration((now - moment).total_seconds())} ago"


def _next(moment: datetime | None, now: datetime, status: MailboxStatus) -> str:
    if not status.is_active:
        return "-"
    if moment is None or moment <= now:
        return "due"
    return f"in {_duration((moment - now).total_seconds())}"


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= ERROR_WIDTH else text[: ERROR_WIDTH - 1] + "…"


class Command(BaseCommand):
    help = (
        "Show the state of every mailbox (ok, needs_reconnect, failing, stale, inactive), its lag, "
        "processing backlog, auto-reply queue and staff's answers that failed or whose outcome is "
        "unknown. Exits 1 when a mailbox needs an OAuth2 reconnect, is failing or stale (for cron "
        "and monitoring), 0 otherwise."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="Print JSON for machines instead of a table."
        )

    def handle(self, *args: object, as_json: bool, **options: object) -> None:
        now = timezone.now()
        statuses = mailbox_statuses(now=now)
        if as_json:
            self._print_json(statuses, now)
        else:
            self._print_table(statuses, now)
        alerts = [status for status in statuses if status.needs_attention]
        if alerts:
            names = ", ".join(f"{status.label} ({status.state})" for status in alerts)
            raise CommandError(f"{len(alerts)} mailbox(es) need attention: {names}", returncode=1)

    def _print_json(self, statuses: list[MailboxStatus], now: datetime) -> None:
        document = {
            "time": now.astimezone(UTC).isoformat(),
            "ok": not any(status.needs_attention for status in statuses),
            "mailboxes": [status.as_json() for status in statuses],
        }
        self.stdout.write(json.dumps(document, indent=2))

    def _print_table(self, statuses: list[MailboxStatus], now: datetime) -> None:
        if not statuses:
            self.stdout.write("No mailboxes configured.")
            return
        header = (
            "ID",
            "MAILBOX",
            "STATE",
            "LAST POLL",
            "LAST SUCCESS",
            "NEXT POLL",
            "FAILURES",
            "BACKLOG",
            "REPLIES PENDING",
            "REPLIES FAILED",
            "ANSWERS FAILED",
            "ANSWERS UNCERTAIN",
            "LAST ERROR",
        )
        numeric = {0, 6, 7, 8, 9, 10, 11}
        rows = [
            (
                str(status.id),
                status.label,
                status.state.upper() if status.needs_attention else status.state,
                _ago(status.last_polled_at, now),
                _ago(status.last_success_at, now),
                _next(status.next_poll_at, now, status),
                str(status.consecutive_failures),
                str(status.backlog),
                str(status.auto_replies_pending),
                str(status.auto_replies_failed),
                str(status.outbound_failed),
                str(status.outbound_uncertain),
                _one_line(status.last_error),
            )
            for status in statuses
        ]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

        def line(cells: tuple[str, ...]) -> str:
            padded = [
                cell.rjust(width) if i in numeric else cell.ljust(width)
                for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
            ]
            return "  ".join(padded).rstrip()

        self.stdout.write(line(header))
        for row in rows:
            self.stdout.write(line(row))
        counts: dict[str, int] = {}
        for status in statuses:
            counts[status.state] = counts.get(status.state, 0) + 1
        summary = ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))
        self.stdout.write(f"\n{len(statuses)} mailbox(es): {summary}")
