"""The IDLE lease: exactly one IDLE connection per mailbox across every supervisor (any host).

Like the poll lease (polling.py), claimed with a conditional UPDATE that only wins on a free or
expired lease, so two supervisors racing for a mailbox can't both win, on SQLite or PostgreSQL.
One token per supervisor process: renewing all its mailboxes is one UPDATE, whatever their number.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from mailboxes.models import Mailbox


def mailboxes_claim_idle_leases(*, mailbox_ids: Iterable[int], token: str, seconds: int) -> set[int]:
    """Claim the free (or expired) IDLE leases among `mailbox_ids`; the ids now held by `token`."""
    ids = list(mailbox_ids)
    if not ids:
        return set()
    now = timezone.now()
    free = (
        Q(idle_lease_expires_at__isnull=True) | Q(idle_lease_expires_at__lt=now) | Q(idle_lease_token=token)
    )
    # A lease taken over from a dead holder starts not live: our connection isn't idling yet.
    Mailbox.objects.filter(pk__in=ids).filter(free).exclude(idle_lease_token=token).update(
        idle_lease_token=token, idle_lease_expires_at=now + timedelta(seconds=seconds), idle_live=False
    )
    return set(Mailbox.objects.filter(pk__in=ids, idle_lease_token=token).values_list("pk", flat=True))


def mailboxes_renew_idle_leases(*, token: str, seconds: int) -> set[int]:
    """Push every lease of `token` ahead; the ids still held (one taken over is not among them)."""
    Mailbox.objects.filter(idle_lease_token=token).update(
        idle_lease_expires_at=timezone.now() + timedelta(seconds=seconds)
    )
    return set(Mailbox.objects.filter(idle_lease_token=token).values_list("pk", flat=True))


def mailbox_set_idle_live(*, mailbox_id: int, token: str, live: bool) -> bool:
    """Whether the holder's connection idles now; False when the lease is no longer ours."""
    return Mailbox.objects.filter(pk=mailbox_id, idle_lease_token=token).update(idle_live=live) == 1


def mailboxes_release_idle_leases(*, token: str, mailbox_ids: Iterable[int] | None = None) -> None:
    """Give leases up (on shutdown: all of them), so another supervisor takes over at once."""
    held = Mailbox.objects.filter(idle_lease_token=token)
    if mailbox_ids is not None:
        held = held.filter(pk__in=list(mailbox_ids))
    held.update(idle_lease_token="", idle_lease_expires_at=None, idle_live=False)
