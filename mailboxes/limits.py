"""The bounds every value from outside is cut to before it reaches a database, an index or a page.

One module, so that a reader finds every limit in one place and storing, processing and the
pages apply the same ones. Each bound is the smaller of what a supported database (SQLite,
PostgreSQL) can store *and index* and what a person could use; hitting one never fails a
message: the value is cut (or dropped) and the cut is recorded in the email's `parse_problem`.
The raw original is always kept whole, so nothing is lost for good.

Pure: no Django import, no I/O (the parser imports it too).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

# -- what one message may create -------------------------------------------------------------
# Attachments (files + rows) extracted from one email; the rest stays in the raw original. A
# 4 MB message of 100,000 empty parts would otherwise create 100,000 files inside one
# transaction. Real mail rarely carries more than a few dozen.
MAX_ATTACHMENTS = 300
# MIME parts the parser walks at all (each costs parsing and decoding time).
MAX_MIME_PARTS = 2_000
# Top-level header fields kept in `Email.headers` (the loop checks and conditions read them).
MAX_HEADERS = 500
# Characters of one header value kept in `Email.headers`.
MAX_HEADER_VALUE_CHARS = 8 * 1024
# Addresses kept per address field (To, Cc, Reply-To).
MAX_ADDRESSES = 1_000
# Message-IDs kept from References: the first and the newest (RFC 5322 §3.6.4 trims that way).
MAX_REFERENCES = 100

# -- text -------------------------------------------------------------------------------------
# The subject is fed to the search index (PostgreSQL: a tsvector is limited to 1 MB, and an
# INSERT whose tsvector is larger fails) and shown in lists; RFC 5322 §2.1.1 lines are <= 998.
MAX_SUBJECT_CHARS = 4_000
# Bytes, not characters, of any text column inside a B-tree index: PostgreSQL refuses an index
# row over ~2,704 bytes (a Message-ID of 900 CJK characters is 2,700 bytes of UTF-8).
MAX_INDEXED_BYTES = 1_000
# Text bodies: stored whole up to this size (the page and the templates see less).
MAX_BODY_CHARS = 16 * 1024 * 1024
# Characters of the text body fed to the search index (also the migration's `left(..., N)`).
MAX_SEARCH_TEXT_CHARS = 100_000
# Characters of an internal note written by staff: a long report pasted in fits (about 30
# pages), a script posting megabytes is refused rather than stored and shown on every visit.
MAX_NOTE_CHARS = 100_000

# -- dates ------------------------------------------------------------------------------------
# Outside this range a date is stored as NULL (Date header) or replaced by the time of storing
# (INTERNALDATE), with a problem: `Fri, 31 Dec 9999 23:59:59 -1400` is valid RFC 5322 but is
# year 10000 in UTC (OverflowError on SQLite; stored by PostgreSQL but unreadable by Python).
EARLIEST_DATE = datetime(1900, 1, 1, tzinfo=UTC)
LATEST_DATE = datetime(2200, 1, 1, tzinfo=UTC)


def clean_text(value: str) -> str:
    """Text every database can store: no NUL (PostgreSQL text and jsonb refuse it) and no lone
    surrogate (`surrogateescape` leftovers cannot be encoded as UTF-8)."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def cut_chars(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[:limit]


def cut_bytes(value: str, limit: int) -> str:
    """At most `limit` bytes of UTF-8, cut at a character boundary."""
    if len(value) * 4 <= limit:  # fast path: even all 4-byte characters fit
        return value
    encoded = value.encode("utf-8")
    if len(encoded) <= limit:
        return value
    return encoded[:limit].decode("utf-8", "ignore")


def bounded_date(value: datetime | None) -> datetime | None:
    """The date if it lies in [EARLIEST_DATE, LATEST_DATE), else None. Compared in UTC, so a
    far zone offset cannot push a date past the range after conversion."""
    if value is None:
        return None
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        utc = aware.astimezone(UTC)
    except (OverflowError, ValueError):
        return None
    return utc if EARLIEST_DATE <= utc < LATEST_DATE else None


def clean_json(value: Any) -> Any:
    """A JSON value (lists, dicts, strings, numbers) with every string cleaned (see clean_text)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list | tuple):
        return [clean_json(item) for item in value]
    if isinstance(value, dict):
        return {clean_text(str(key)): clean_json(item) for key, item in value.items()}
    return value


def _indexed_field_names(meta: Any) -> set[str]:
    names = {field.name for field in meta.concrete_fields if field.db_index or field.unique}
    for index in meta.indexes:
        names.update(name.lstrip("-") for name in index.fields)
    for constraint in meta.constraints:
        names.update(getattr(constraint, "fields", ()) or ())
    return names


def fit_row(instance: Any, *, problems: list[str] | None = None) -> None:
    """Cut every text value of a model instance to what its column (and index) can hold.

    CharFields to their `max_length` in characters (PostgreSQL's varchar(n) refuses longer
    values; SQLite would store them), indexed ones also to MAX_INDEXED_BYTES of UTF-8; every
    string and JSON value cleaned of what no database stores. Cuts are appended to `problems`.
    Called by the services that create rows from email content, right before saving.
    """
    meta = instance._meta
    indexed = _indexed_field_names(meta)
    for field in meta.concrete_fields:
        value = getattr(instance, field.attname, None)
        if isinstance(value, str):
            fitted = clean_text(value)
            max_length = getattr(field, "max_length", None)
            if max_length and field.get_internal_type() in ("CharField", "EmailField", "SlugField"):
                fitted = cut_chars(fitted, max_length)
            if field.name in indexed:
                fitted = cut_bytes(fitted, MAX_INDEXED_BYTES)
            if fitted != value:
                if problems is not None and len(fitted) < len(value):
                    problems.append(f"{field.name} cut to {len(fitted)} of {len(value)} characters")
                setattr(instance, field.attname, fitted)
        elif field.get_internal_type() == "JSONField" and value is not None:
            setattr(instance, field.attname, clean_json(value))
