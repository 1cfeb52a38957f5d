"""`when`: the `date` filter for instants that came from outside (a Date header, a server's
INTERNALDATE), which may sit at the edge of what Python's datetime holds.

Django's `date` converts to the display time zone first, and `astimezone` raises OverflowError
for an instant whose local time falls outside years 1..9999 (0001-01-01 00:00 UTC seen from
UTC-12, 9999-12-31 23:00 UTC seen from UTC+14): one such email made the grid, its page and its
case's page answer 500. `when` shows such an instant in UTC, marked so, instead.

`duration`: a waiting time (a case's first response) in words.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from django import template
from django.utils import formats, timezone

register = template.Library()


@register.filter(expects_localtime=False)
def when(value: date | None, arg: str | None = None) -> str:
    if not isinstance(value, datetime):
        return formats.date_format(value, arg) if value else ""
    suffix = ""
    if timezone.is_aware(value):
        try:
            value = timezone.localtime(value)
        except (OverflowError, ValueError):
            value, suffix = value.astimezone(UTC), " UTC"
    # A naive value (written by hand, or by a test) is shown as it is: it names no zone to convert.
    try:
        return formats.date_format(value, arg) + suffix
    except (OverflowError, ValueError):
        return value.isoformat()


@register.filter
def duration(value: timedelta | None) -> str:
    """A waiting time as people say it: "45 min", "2 h 5 min", "3 d 4 h" (seconds dropped,
    only the two largest units), "under 1 min"."""
    if not isinstance(value, timedelta):
        return ""
    minutes = max(int(value.total_seconds()) // 60, 0)
    if minutes < 1:
        return "under 1 min"
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min"
