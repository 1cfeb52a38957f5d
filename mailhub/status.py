"""Operational status of the mailboxes: read-only selectors for `mailhub_status` and the admin list.

Everything is computed from one query: the per-mailbox counts are correlated subqueries
(`mailboxes_annotate_status`), so the cost does not grow with the number of mailboxes, and the
state is derived from the annotated row in Python (`mailbox_state`), so the command, the JSON
output and the admin column cannot disagree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Any, TypedDict

from django.db.models import Case, CharField, Count, IntegerField, OuterRef, QuerySet, Subquery, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from autoresponse.models import AutoReply, AutoReplyStatus
from mailboxes.models import Email, Mailbox, OutboundMessage, OutboundStatus, ProcessingStatus
from mailboxes.oauth_models import AuthMethod, GrantPurpose, GrantStatus, OAuthGrant

if TYPE_CHECKING:
    # Only for the checker: django-stubs-ext is a development dependency.
    from django_stubs_ext import WithAnnotations


class MailboxState(StrEnum):
    OK = "ok"
    # An OAuth2 connection the mailbox logs in with was revoked or refused: only an admin's
    # Reconnect helps (nothing is retried against the identity provider meanwhile). Its own state,
    # before "failing", so that the admin knows what to do without reading the error.
    NEEDS_RECONNECT = "needs_reconnect"
    FAILING = "failing"
    STALE = "stale"
    INACTIVE = "inactive"


# States that need a person: `mailhub_status` exits 1 when any mailbox is in one of them.
ALERT_STATES = frozenset({MailboxState.NEEDS_RECONNECT, MailboxState.FAILING, MailboxState.STALE})

# A mailbox is stale when it has not been polled successfully for this many poll intervals, and
# never sooner than STALE_MIN_AGE: the beat dispatcher runs every MAILHUB_DISPATCH_EVERY seconds
# and a poll of a large folder takes a while, so a 10 s interval must not alert after 30 s.
STALE_INTERVALS = 3
STALE_MIN_AGE = timedelta(minutes=10)

BACKLOG_STATUSES = (ProcessingStatus.PENDING, ProcessingStatus.FAILED)
# 'sending' is in flight (or interrupted: a later poll marks it 'uncertain').
AUTO_REPLY_PENDING_STATUSES = (AutoReplyStatus.PENDING, AutoReplyStatus.SENDING)
# Both need a person: 'uncertain' ones are never retried automatically.
AUTO_REPLY_FAILED_STATUSES = (AutoReplyStatus.FAILED, AutoReplyStatus.UNCERTAIN)


@dataclass(frozen=True)
class MailboxStatus:
    id: int
    label: str
    is_active: bool
    poll_interval: int
    last_polled_at: datetime | None
    last_success_at: datetime | None
    lag: float | None  # seconds since the last successful poll; None if there never was one
    backlog: int  # new emails whose processing is pending or failed
    consecutive_failures: int
    last_error: str
    next_poll_at: datetime | None
    auto_replies_pending: int
    auto_replies_failed: int
    # Staff's answers that need a person: failed ones and those whose outcome is unknown (never
    # sent again automatically).
    outbound_failed: int
    outbound_uncertain: int
    # The protocols ("imap", "smtp") whose OAuth2 connection needs to be reconnected.
    oauth_needs_reconnect: list[str]
    state: MailboxState

    @property
    def needs_attention(self) -> bool:
        return self.state in ALERT_STATES

    def as_json(self) -> dict[str, Any]:
        """JSON-ready: datetimes as ISO 8601 strings (UTC), the state as its value."""
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, datetime):
                data[key] = value.astimezone(UTC).isoformat()
            elif isinstance(value, Enum):
                data[key] = value.value
        return data


class StatusCounts(TypedDict):
    """The columns `mailboxes_annotate_status` adds to each mailbox row."""

    status_backlog: int
    status_auto_replies_pending: int
    status_auto_replies_failed: int
    status_outbound_failed: int
    status_outbound_uncertain: int
    status_imap_grant: str | None
    status_smtp_grant: str | None


if TYPE_CHECKING:
    # A Mailbox row that carries the StatusCounts columns.
    AnnotatedMailbox = WithAnnotations[Mailbox, StatusCounts]


def _count(queryset: QuerySet[Any], outer_field: str) -> Coalesce:
    """A correlated COUNT(*) subquery per mailbox, 0 when there are no rows."""
    counted = (
        queryset.filter(**{outer_field: OuterRef("pk")})
        .order_by()
        .values(outer_field)
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def _grant_status(purpose: GrantPurpose) -> Subquery:
    """The status of the OAuth2 grant that serves `purpose`: the mailbox's own grant for it, else
    the shared one (as mailbox_oauth_grant chooses); NULL without one."""
    serving = (
        OAuthGrant.objects.filter(mailbox=OuterRef("pk"), purpose__in=[purpose, GrantPurpose.SHARED])
        .order_by(Case(When(purpose=purpose, then=Value(0)), default=Value(1)))
        .values("status")[:1]
    )
    return Subquery(serving, output_field=CharField())


def mailboxes_annotate_status(queryset: QuerySet[Mailbox] | None = None) -> QuerySet[AnnotatedMailbox]:
    """Mailboxes with the StatusCounts columns (backlog, auto-replies pending and failed, answers
    failed and of unknown outcome, the status of the OAuth2 grant of each protocol).

    Subqueries rather than Count() over joins: two reverse joins (emails, their auto-replies) in
    one GROUP BY would multiply each other's rows, and the subqueries keep the queryset usable by
    the admin (ordering, filters, actions) without a GROUP BY.
    """
    queryset = Mailbox.objects.all() if queryset is None else queryset
    return queryset.annotate(
        status_backlog=_count(Email.objects.filter(processing_status__in=BACKLOG_STATUSES), "mailbox"),
        status_auto_replies_pending=_count(
            AutoReply.objects.filter(status__in=AUTO_REPLY_PENDING_STATUSES), "email__mailbox"
        ),
        status_auto_replies_failed=_count(
            AutoReply.objects.filter(status__in=AUTO_REPLY_FAILED_STATUSES), "email__mailbox"
        ),
        status_outbound_failed=_count(
            OutboundMessage.objects.filter(status=OutboundStatus.FAILED), "email__mailbox"
        ),
        status_outbound_uncertain=_count(
            OutboundMessage.objects.filter(status=OutboundStatus.UNCERTAIN), "email__mailbox"
        ),
        status_imap_grant=_grant_status(GrantPurpose.IMAP),
        status_smtp_grant=_grant_status(GrantPurpose.SMTP),
    )


def stale_after(poll_interval: int) -> timedelta:
    return max(timedelta(seconds=STALE_INTERVALS * poll_interval), STALE_MIN_AGE)


def mailbox_oauth_needs_reconnect(mailbox: Mailbox) -> list[str]:
    """The protocols ("imap", "smtp") that log in with OAuth2 through a grant that needs to be
    reconnected, from the annotated grant statuses (no query; [] on a row without them). A grant
    of a protocol that uses its password is no alarm: nothing uses it."""
    protocols = []
    for protocol, auth, grant_status in (
        ("imap", mailbox.imap_auth, getattr(mailbox, "status_imap_grant", None)),
        ("smtp", mailbox.smtp_auth, getattr(mailbox, "status_smtp_grant", None)),
    ):
        if auth == AuthMethod.OAUTH2 and grant_status == GrantStatus.NEEDS_RECONNECT:
            protocols.append(protocol)
    return protocols


def mailbox_state(mailbox: Mailbox, *, now: datetime | None = None) -> MailboxState:
    """ok / needs_reconnect / failing / stale / inactive of one mailbox (its fields and the
    annotated columns only, no query).

    Inactive wins: nobody polls a disabled mailbox, so its last error or age is not an alarm.
    A grant that needs to be reconnected comes next: it is the cause of the failures, and it stops
    the SMTP sends of a mailbox whose polls still work.
    A mailbox that never succeeded is measured from its creation, so a mailbox added a minute ago
    is not stale before its first poll had a chance to run.
    """
    if not mailbox.is_active:
        return MailboxState.INACTIVE
    if mailbox_oauth_needs_reconnect(mailbox):
        return MailboxState.NEEDS_RECONNECT
    if mailbox.consecutive_failures > 0 or mailbox.last_error:
        return MailboxState.FAILING
    since = mailbox.last_success_at or mailbox.created_at
    if since is not None and (now or timezone.now()) - since > stale_after(mailbox.poll_interval):
        return MailboxState.STALE
    return MailboxState.OK


def _status_of(mailbox: AnnotatedMailbox, now: datetime) -> MailboxStatus:
    lag = (now - mailbox.last_success_at).total_seconds() if mailbox.last_success_at else None
    return MailboxStatus(
        id=mailbox.pk,
        label=mailbox.label,
        is_active=mailbox.is_active,
        poll_interval=mailbox.poll_interval,
        last_polled_at=mailbox.last_polled_at,
        last_success_at=mailbox.last_success_at,
        lag=lag,
        backlog=mailbox.status_backlog,
        consecutive_failures=mailbox.consecutive_failures,
        last_error=mailbox.last_error,
        next_poll_at=mailbox.next_poll_at,
        auto_replies_pending=mailbox.status_auto_replies_pending,
        auto_replies_failed=mailbox.status_auto_replies_failed,
        outbound_failed=mailbox.status_outbound_failed,
        outbound_uncertain=mailbox.status_outbound_uncertain,
        oauth_needs_reconnect=mailbox_oauth_needs_reconnect(mailbox),
        state=mailbox_state(mailbox, now=now),
    )


def mailbox_statuses(*, now: datetime | None = None) -> list[MailboxStatus]:
    """The status of every mailbox, ordered by label, in one query."""
    now = now or timezone.now()
    return [_status_of(mailbox, now) for mailbox in mailboxes_annotate_status().order_by("label", "pk")]
