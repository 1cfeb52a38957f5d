"""The grid of My Emails: filters, full-text search and seek pagination over what a user sees."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.db import connections
from django.db.models import BooleanField, F, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.db.models.functions import Substr
from django.utils import timezone

from mailboxes.models import Email, SubjectSortKey
from mailhub.web.users import AnyUser

from .access import emails_visible_to


class Relation:
    LEAD = "lead"
    CASE = "case"
    NEITHER = "none"


SORT_KEYS = {
    "received": F("received_at"),
    "sender": F("from_address"),
    "subject": SubjectSortKey("subject"),
}
SNIPPET_LENGTH = 160
MAX_SEARCH_TERMS = 8
_SEARCH_TERM = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class EmailGridQuery:
    search: str = ""
    relation: str = ""  # "" (any), Relation.LEAD, Relation.CASE, Relation.NEITHER
    with_attachments: bool = False
    received_from: date | None = None  # inclusive, in the display time zone
    received_until: date | None = None  # inclusive
    sort: str = "received"  # a key of SORT_KEYS
    descending: bool = True


@dataclass(frozen=True)
class EmailGridPage:
    emails: list[Email]
    next_cursor: str | None  # opaque; pass as `after` for the next page
    previous_cursor: str | None  # pass as `before` for the previous page


def search_terms(text: str) -> list[str]:
    """Words of a search box, lowercased. Letters and digits only: no quote or operator of either
    full-text syntax can come through, and both index the same units."""
    return [term.lower()[:64] for term in _SEARCH_TERM.findall(text)][:MAX_SEARCH_TERMS]


# A stored tsvector column of PostgreSQL (mailboxes/migrations/0008), with its GIN index.
# Constant SQL: the user's words only travel as the parameter (a tsquery of letters and digits).
_POSTGRES_MATCH = "mailboxes_email.search_vector @@ to_tsquery('simple'::regconfig, %s)"


def email_search_condition(terms: list[str], *, vendor: str) -> Q:
    """All terms, each as a word prefix, in the subject, sender or text body.

    SQLite: the FTS5 table of migration 0003, as "id IN (the matching ids)": the index answers
    once and the grid walks its usual (mailbox, date) index keeping the ids found. PostgreSQL: a
    plain condition on the stored tsvector column (migration 0008), so the planner chooses with
    the column's lexeme statistics: the GIN index for a rare word, the newest-first walk that
    stops at a full page for a word found in most emails. Other databases fall back to a (slow)
    substring scan. A term is a prefix ("inv" finds "invoice").
    """
    if vendor == "sqlite":
        match = " ".join(f'"{term}"*' for term in terms)
        return Q(
            pk__in=RawSQL("SELECT rowid FROM mailboxes_email_fts WHERE mailboxes_email_fts MATCH %s", [match])
        )
    if vendor == "postgresql":
        tsquery = " & ".join(f"{term}:*" for term in terms)
        return Q(RawSQL(_POSTGRES_MATCH, [tsquery], output_field=BooleanField()))  # noqa: S611 - constant SQL
    condition = Q()
    for term in terms:
        condition &= (
            Q(subject__icontains=term)
            | Q(from_name__icontains=term)
            | Q(from_address__icontains=term)
            | Q(text_body__icontains=term)
        )
    return condition


def _start_of_day(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def emails_filtered(emails: QuerySet[Email], query: EmailGridQuery) -> QuerySet[Email]:
    """The grid's filters and search applied to emails already narrowed to what the user sees."""
    if query.relation == Relation.LEAD:
        emails = emails.filter(lead__isnull=False)
    elif query.relation == Relation.CASE:
        emails = emails.filter(case__isnull=False)
    elif query.relation == Relation.NEITHER:
        emails = emails.filter(lead__isnull=True, case__isnull=True)
    if query.with_attachments:
        emails = emails.filter(has_attachments=True)
    if query.received_from:
        emails = emails.filter(received_at__gte=_start_of_day(query.received_from))
    if query.received_until and query.received_until < date.max:  # "until 9999-12-31": no limit
        emails = emails.filter(received_at__lt=_start_of_day(query.received_until + timedelta(days=1)))
    terms = search_terms(query.search)
    if terms:
        emails = emails.filter(email_search_condition(terms, vendor=connections[emails.db].vendor))
    return emails


@dataclass(frozen=True)
class _Cursor:
    key: str | datetime
    pk: int


def _encode_cursor(sort: str, pk: int, key: str | datetime) -> str:
    payload = [key.isoformat() if isinstance(key, datetime) else key, pk]
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_cursor(sort: str, token: str | None) -> _Cursor | None:
    """A cursor from the URL, or None if it is not one of ours (then the first page is shown).

    Not signed on purpose: a forged cursor can only move where a page starts among the emails
    the user may see anyway.
    """
    if not token:
        return None
    try:
        if len(token) > 4096:
            return None
        key, pk = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(key, str) or not isinstance(pk, int) or "\x00" in key:
            return None
        if sort == "received":
            moment = datetime.fromisoformat(key)
            moment = moment if timezone.is_aware(moment) else timezone.make_aware(moment)
            # Normalised here so that an out-of-range instant fails now, not in the database.
            return _Cursor(moment.astimezone(UTC), pk)
        return _Cursor(key, pk)
    # A tampered cursor (nesting deep enough for RecursionError, a year-1 or year-9999 instant
    # that overflows in another zone) just means "first page".
    except (ValueError, TypeError, OverflowError, RecursionError, binascii.Error, UnicodeDecodeError):
        return None


def _after(cursor: _Cursor, *, descending: bool) -> Q:
    """Rows strictly after the cursor in (sort key, id) order. Written as `key <= k AND (key < k
    OR id < i)` rather than a plain OR, so both SQLite and PostgreSQL seek the index to `k`."""
    if descending:
        return Q(grid_sort_key__lte=cursor.key) & (Q(grid_sort_key__lt=cursor.key) | Q(pk__lt=cursor.pk))
    return Q(grid_sort_key__gte=cursor.key) & (Q(grid_sort_key__gt=cursor.key) | Q(pk__gt=cursor.pk))


def email_grid_page(
    *,
    user: AnyUser,
    mailbox_ids: list[int] | None,
    query: EmailGridQuery,
    after: str | None = None,
    before: str | None = None,
    page_size: int = 50,
) -> EmailGridPage:
    """One page of the grid, by seek (keyset) pagination: two queries, whatever the page's depth.

    An OFFSET makes the database walk every row before the page (page 4,000 reads 100,000 index
    entries); a seek starts at the last row of the previous page through the (mailbox, sort key,
    id) index. The price: no jump to an arbitrary page number and no total count (which would
    also read every row), only next/previous.

    `mailbox_ids` narrows the visible emails further (None: all the user may see). The rows carry
    only what the grid shows: a `snippet` (the start of the text body, cut in the database), the
    mailbox label, the lead's name and the case number.
    """
    sort = query.sort if query.sort in SORT_KEYS else "received"
    backwards = bool(before) and not after
    cursor = _decode_cursor(sort, before if backwards else after)
    backwards = backwards and cursor is not None
    descending = query.descending != backwards  # walking back = walking the other way

    emails = emails_visible_to(user)
    if mailbox_ids is not None:
        emails = emails.filter(mailbox_id__in=mailbox_ids)
    emails = emails_filtered(emails, query).annotate(grid_sort_key=SORT_KEYS[sort])
    if cursor is not None:
        emails = emails.filter(_after(cursor, descending=descending))
    order = ["-grid_sort_key", "-pk"] if descending else ["grid_sort_key", "pk"]
    # Two steps, so the database's plan cannot depend on what the page displays: first the keys
    # of the page alone (answered from the (mailbox, sort key, id) index, no join), then those
    # rows with their columns. In one query, SQLite may drive the join from the mailboxes or walk
    # another index, and sort every email of the view to keep one page.
    keys = list(emails.order_by(*order).values_list("pk", "grid_sort_key")[: page_size + 1])
    more = len(keys) > page_size
    keys = keys[:page_size]
    if backwards:
        keys.reverse()
    if not keys:
        return EmailGridPage(emails=[], next_cursor=None, previous_cursor=None)
    rows = (
        Email.objects.filter(pk__in=[pk for pk, _key in keys])
        .select_related("mailbox", "lead", "case", "sent_by")
        .only(
            "pk",
            "direction",
            "to",
            "sent_by__username",
            "subject",
            "from_name",
            "from_address",
            "received_at",
            "has_attachments",
            "mailbox__label",
            "lead__name",
            "case__number",
        )
        .annotate(snippet=Substr("text_body", 1, SNIPPET_LENGTH))
    )
    by_pk = {email.pk: email for email in rows}
    # Forward: a next page if a row was left over; a previous one if we came from a cursor.
    # Backward: the next page is where we came from; a previous one if a row was left over.
    has_next = more if not backwards else True
    has_previous = cursor is not None if not backwards else more
    return EmailGridPage(
        emails=[by_pk[pk] for pk, _key in keys if pk in by_pk],
        next_cursor=_encode_cursor(sort, *keys[-1]) if has_next else None,
        previous_cursor=_encode_cursor(sort, *keys[0]) if has_previous else None,
    )


def email_grid_cursor_at(
    *, user: AnyUser, mailbox_ids: list[int] | None, query: EmailGridQuery, position: int
) -> str:
    """The `after` cursor of a page starting at row `position` (0-based, > 0), for benchmarks and
    tests. It uses an OFFSET, exactly what the grid avoids: no page calls it."""
    sort = query.sort if query.sort in SORT_KEYS else "received"
    emails = emails_visible_to(user)
    if mailbox_ids is not None:
        emails = emails.filter(mailbox_id__in=mailbox_ids)
    emails = emails_filtered(emails, query).annotate(grid_sort_key=SORT_KEYS[sort])
    order = ["-grid_sort_key", "-pk"] if query.descending else ["grid_sort_key", "pk"]
    pk, key = emails.order_by(*order).values_list("pk", "grid_sort_key")[position - 1]
    return _encode_cursor(sort, pk, key)
