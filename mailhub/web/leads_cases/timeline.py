"""A case's timeline: its emails (incoming and outgoing), its notes and its history events in one
chronological list, a page at a time.

Paged by keyset, not by page number: every entry has a position (time, kind, id) and a page is
"the next N after this position" (or "the N before it"). Each of the three sources is asked for
at most N + 1 rows past the position, in its own index order (email: case + received_at,
note: case + created_at, event: case + created_at), and the three short lists are merged. A case
with 10,000 emails and 5,000 notes costs three queries of 51 rows for any page, however deep,
where an OFFSET would read and skip every row before the page, and merging whole lists would
load all of them. A page number cannot be jumped to; the pager offers the start, the end, and
the pages on either side, which is how a conversation is read.

Ties (an email and a note stored in the same microsecond) are ordered by kind, then id, so the
order is total and no entry is shown twice or skipped between two pages.
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any

from django.db.models import Q, QuerySet
from django.db.models.functions import Length, Substr

from mailboxes.models import Email, Mailbox
from mailhub.web.emails.access import emails_visible_to
from mailhub.web.emails.email_page import EMAILS_PER_RECORD_PAGE
from mailhub.web.emails.grid import SNIPPET_LENGTH
from mailhub.web.users import AnyUser
from processing.models import Case, CaseEvent, Note

TIMELINE_PAGE_SIZE = EMAILS_PER_RECORD_PAGE
# Characters of one note shown in a timeline (or on an email's page): a page of 50 notes of the
# longest allowed size (limits.MAX_NOTE_CHARS) would otherwise be 5 MB before escaping.
NOTE_SHOWN_CHARS = 5_000


class EntryKind(IntEnum):
    """The kinds of entries, in their order when two have the same time."""

    EMAIL = 0
    NOTE = 1
    EVENT = 2


@dataclass(frozen=True, order=True)
class Position:
    """Where an entry sits in the timeline: the order is (time, kind, id)."""

    at: datetime
    kind: int
    pk: int

    _EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
    _PATTERN = re.compile(r"(-?[0-9]{1,18})\.([0-2])\.([0-9]{1,19})")

    def to_text(self) -> str:
        micros = (self.at - self._EPOCH) // timedelta(microseconds=1)
        return f"{micros}.{self.kind}.{self.pk}"

    @classmethod
    def from_text(cls, text: str | None) -> Position | None:
        """The position written by `to_text`, or None for anything else (a hand-made URL)."""
        match = cls._PATTERN.fullmatch(text or "")
        if match is None:
            return None
        try:
            at = cls._EPOCH + timedelta(microseconds=int(match[1]))
        except OverflowError:
            return None
        return cls(at=at, kind=int(match[2]), pk=int(match[3]))


@dataclass(frozen=True)
class TimelineEntry:
    position: Position
    email: Email | None = None
    note: Note | None = None
    event: CaseEvent | None = None

    @property
    def kind(self) -> str:
        return EntryKind(self.position.kind).name.lower()

    @property
    def cursor(self) -> str:
        return self.position.to_text()


@dataclass(frozen=True)
class TimelinePage:
    entries: list[TimelineEntry]
    has_earlier: bool
    has_later: bool
    counts: dict[str, int]  # emails, notes, events of the whole timeline

    @property
    def earlier_cursor(self) -> str | None:
        return self.entries[0].cursor if self.entries and self.has_earlier else None

    @property
    def later_cursor(self) -> str | None:
        return self.entries[-1].cursor if self.entries and self.has_later else None


def _past(field: str, kind: EntryKind, position: Position, *, later: bool) -> Q:
    """Rows of one source (all of kind `kind`) strictly after (`later`) or before `position`."""
    strict, loose = ("gt", "gte") if later else ("lt", "lte")
    if kind == position.kind:
        return Q(**{f"{field}__{strict}": position.at}) | Q(
            **{field: position.at, f"pk__{strict}": position.pk}
        )
    # Another kind at the same instant sorts by kind: it is past the position when its kind is.
    kind_is_past = kind > position.kind if later else kind < position.kind
    return Q(**{f"{field}__{loose if kind_is_past else strict}": position.at})


def _case_emails(user: AnyUser, case: Case) -> QuerySet[Email]:
    return (
        emails_visible_to(user)
        .filter(case_id=case.pk)
        .select_related("sent_by", "outbound")
        .only(
            "pk",
            "subject",
            "from_name",
            "from_address",
            "received_at",
            "has_attachments",
            "direction",
            "sent_by__username",
            "outbound__status",
            "outbound__reason",
        )
        .annotate(snippet=Substr("text_body", 1, SNIPPET_LENGTH))
    )


def _notes(notes: QuerySet[Note]) -> QuerySet[Note]:
    """Notes as a page shows them: the start of the body, cut in the database, and its length."""
    return notes.defer("body").annotate(shown=Substr("body", 1, NOTE_SHOWN_CHARS), length=Length("body"))


def _case_notes(user: AnyUser, case: Case) -> QuerySet[Note]:
    """The case's notes, and the notes written on its emails before they joined it (those on an
    email of a mailbox the user cannot see are left out, like the email)."""
    on_its_emails = Q(
        case__isnull=True,
        email__case_id=case.pk,
        email__mailbox__in=Mailbox.objects.accessible_to(user),
    )
    return _notes(Note.objects.filter(Q(case_id=case.pk) | on_its_emails))


def _sources(user: AnyUser, case: Case) -> list[tuple[EntryKind, str, QuerySet[Any]]]:
    return [
        (EntryKind.EMAIL, "received_at", _case_emails(user, case)),
        (EntryKind.NOTE, "created_at", _case_notes(user, case)),
        (EntryKind.EVENT, "created_at", CaseEvent.objects.filter(case_id=case.pk)),
    ]


def _entry(kind: EntryKind, field: str, row: Any) -> TimelineEntry:
    position = Position(at=getattr(row, field), kind=kind, pk=row.pk)
    name = {EntryKind.EMAIL: "email", EntryKind.NOTE: "note", EntryKind.EVENT: "event"}[kind]
    return TimelineEntry(position=position, **{name: row})


def case_timeline_page(
    *,
    user: AnyUser,
    case: Case,
    after: str | None = None,
    before: str | None = None,
    latest: bool = False,
    size: int = TIMELINE_PAGE_SIZE,
) -> TimelinePage:
    """One page of the case's timeline, oldest first: the first page, the page `after` or
    `before` a position (a cursor of an entry), or the `latest` page. A cursor that cannot be read
    gives the first page. The caller has checked that `user` may see `case`."""
    after_position, before_position = Position.from_text(after), Position.from_text(before)
    backwards = before_position is not None or (latest and after_position is None)
    position = before_position if before_position is not None else after_position
    lists = []
    for kind, field, rows in _sources(user, case):
        if position is not None:
            rows = rows.filter(_past(field, kind, position, later=not backwards))
        order = (f"-{field}", "-pk") if backwards else (field, "pk")
        lists.append([_entry(kind, field, row) for row in rows.order_by(*order)[: size + 1]])
    merged = list(heapq.merge(*lists, key=lambda entry: entry.position, reverse=backwards))
    more = len(merged) > size
    entries = merged[:size]
    if backwards:
        entries.reverse()
        has_earlier, has_later = more, position is not None
    else:
        has_earlier, has_later = position is not None, more
    if not entries and position is not None:  # walked off an end: show that end
        return case_timeline_page(user=user, case=case, latest=not backwards, size=size)
    return TimelinePage(
        entries=entries,
        has_earlier=has_earlier,
        has_later=has_later,
        counts={
            "emails": emails_visible_to(user).filter(case_id=case.pk).count(),
            "notes": _case_notes(user, case).count(),
            "events": CaseEvent.objects.filter(case_id=case.pk).count(),
        },
    )


def email_notes(*, email: Email, limit: int = TIMELINE_PAGE_SIZE) -> list[Note]:
    """The notes an email's page shows: the email's own, and those of its case (the latest
    `limit`, oldest first). The caller has checked that the user may see the email (and so its
    case, which is in the email's mailbox)."""
    notes = Q(email_id=email.pk)
    if email.case_id:
        notes |= Q(case_id=email.case_id)
    latest = _notes(Note.objects.filter(notes)).order_by("-created_at", "-pk")[:limit]
    return list(reversed(latest))
