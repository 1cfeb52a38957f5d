"""The `<id:...>` path converter of every URL that names a row: a database id, 1..2**63-1.

An id is a BIGINT on PostgreSQL and an INTEGER on SQLite, both 64-bit signed: a larger number
in a URL cannot name a row, and handing it to the database fails there (SQLite: OverflowError
"Python int too large to convert to SQLite INTEGER", PostgreSQL: "out of range for type
bigint"), a 500 instead of the 404 of anything else that does not exist. The converter makes
such a path not match at all, before any query. ASCII digits only: `int()` also reads
full-width and other Unicode digits (full-width "01" is 1), which would give one row several URLs.

Imported by each URL conf that uses `<id:...>` (the import registers it, once).
"""

from __future__ import annotations

from django.urls import register_converter

MAX_DATABASE_ID = 2**63 - 1
_MAX_DIGITS = len(str(MAX_DATABASE_ID))


def database_id_from_text(text: str) -> int | None:
    """The id written in `text` (a URL segment, a query or form parameter), or None if it cannot
    name a row: not ASCII digits, zero, or beyond what the database stores."""
    if not (text.isascii() and text.isdecimal()) or len(text) > _MAX_DIGITS:
        return None
    number = int(text)
    return number if 1 <= number <= MAX_DATABASE_ID else None


class DatabaseIdConverter:
    regex = f"[0-9]{{1,{_MAX_DIGITS}}}"

    def to_python(self, value: str) -> int:
        number = database_id_from_text(value)
        if number is None:  # a ValueError here means "this pattern does not match": a 404
            raise ValueError("not a database id")
        return number

    def to_url(self, value: int) -> str:
        return str(int(value))


register_converter(DatabaseIdConverter, "id")
