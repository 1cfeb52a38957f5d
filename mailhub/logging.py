"""Structured logs: one JSON object per line, for log shippers (selected by LOG_FORMAT=json)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else on a record came from `extra=` (or a filter).
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",  # Python 3.12+
}
_CORE_KEYS = ("time", "level", "logger", "message")


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", ...extra fields}` on one line.

    The message is the formatted text (the same line a person reads with the plain format); the
    `extra=` fields carry the values as JSON types so that they can be queried without parsing the
    text. Values JSON does not know are written with `str()`: a log call must never fail.
    """

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            # UTC with milliseconds, RFC 3339: sorts as text and needs no time zone database.
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in _RECORD_ATTRIBUTES or key.startswith("_"):
                continue
            # An extra field named like a core key must not hide the core value.
            document[f"{key}_" if key in _CORE_KEYS else key] = value
        if record.exc_info:
            document["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(document, default=str, ensure_ascii=False)


class SkipEmptyPolls(logging.Filter):
    """Drops the line of a poll that found nothing and failed at nothing (`mailhub.poll` records
    carry `new`, `history`, `duplicates` and `error` as extra fields). On the embedded mode's
    console such a line would repeat every poll interval per mailbox and hide the lines that
    matter; the last poll's outcome stays on the mailbox, shown in the admin. Other records of
    the logger (no such fields) pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = ("new", "history", "duplicates", "error")
        if not all(hasattr(record, name) for name in fields):
            return True
        return any(getattr(record, name) for name in fields)
