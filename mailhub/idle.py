"""The IDLE push supervisor: one asyncio loop, one IDLE connection per active mailbox.

For every active mailbox whose IDLE lease it wins (mailboxes/services/idle_lease.py: exactly one
holder across every host), the supervisor keeps an IDLE connection (mailboxes/idle.py, RFC 2177)
and, when the server reports `EXISTS`, runs the mailbox's existing poll: queued as its Celery
task (`poll_mailbox`), or in this process (`inline`, no broker). Polls are deduplicated per
mailbox: while one runs, further arrivals only set a flag, and one more poll runs after it
(a burst of 50 arrivals gives one poll at a time and a last one after the burst); the poll lease
keeps this poll apart from the regular ones.

Timers: IDLE is re-issued every MAILHUB_IDLE_RENEW_SECONDS (servers may drop a client idling
30 minutes); a connection silent for MAILHUB_IDLE_DEAD_AFTER is probed with DONE, and one whose
DONE is not answered within MAILHUB_NETWORK_TIMEOUT is dead (NATs drop idle connections without
a word): dropped and reconnected with backoff. Every (re)connection is followed by a poll, for
what arrived while no connection was idling. Every MAILHUB_IDLE_REFRESH_SECONDS the active
mailboxes are re-read (added, deactivated, changed in the admin) and the leases renewed.

Database calls run in threads (asgiref's sync_to_async), never on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections

from mailboxes.backoff import backoff_delay
from mailboxes.encryption import SecretDecryptionError
from mailboxes.idle import IdleConnection, idle_connect
from mailboxes.imap import ImapError, ImapSettings
from mailboxes.models import Mailbox
from mailboxes.oauth_models import AuthMethod, GrantPurpose
from mailboxes.services.idle_lease import (
    mailbox_set_idle_live,
    mailboxes_claim_idle_leases,
    mailboxes_release_idle_leases,
    mailboxes_renew_idle_leases,
)
from mailboxes.services.oauth import OAuthGrantError, mailbox_oauth_grant, oauth_access_token

logger = logging.getLogger("mailhub.idle")

P = ParamSpec("P")
R = TypeVar("R")
PollFunction = Callable[[int], Awaitable[None]]


async def _db(function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run a short database function in a thread, then close that thread's connection.

    Closed every time, not kept for CONN_MAX_AGE: the calls are few (a refresh every
    MAILHUB_IDLE_REFRESH_SECONDS, one per (re)connection), and pool threads keeping one open
    connection each would hold PostgreSQL sessions that nobody uses between refreshes.
    """

    def call() -> R:
        try:
            return function(*args, **kwargs)
        finally:
            connections.close_all()

    return await sync_to_async(call, thread_sensitive=False)()


@dataclass
class _PollGate:
    """A per-mailbox 'poll requested' flag: at most one poll at a time, one more after it."""

    requested: bool = False
    task: asyncio.Task[None] | None = None


@dataclass
class _Held:
    version: datetime  # the mailbox's updated_at when its connection was started
    task: asyncio.Task[None] | None = None
    live: bool = False


@dataclass
class SupervisorStatus:
    live: list[int] = field(default_factory=list)
    without_idle: list[int] = field(default_factory=list)
    connecting: list[int] = field(default_factory=list)


class IdleSupervisor:
    def __init__(self, *, poll: PollFunction, token: str | None = None) -> None:
        self.poll = poll
        self.token = token or secrets.token_hex(16)
        self.held: dict[int, _Held] = {}
        self.without_idle: set[int] = set()
        self.gates: dict[int, _PollGate] = {}
        self.idle_commands = 0  # IDLE commands sent, renewals included (for tests and the status)
        self._stop = asyncio.Event()
        self._reported: tuple[int, int] = (-1, -1)

    # -- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Until stop(): refresh, hold, renew. Leases are given up on the way out."""
        try:
            while not self._stop.is_set():
                try:
                    await self.refresh()
                except Exception:
                    # The database away for a moment: keep the connections, try again later (the
                    # leases last several refreshes).
                    logger.exception("IDLE supervisor: refreshing the mailboxes failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), settings.MAILHUB_IDLE_REFRESH_SECONDS)
        finally:
            await self.shutdown()

    def stop(self) -> None:
        self._stop.set()

    async def refresh(self) -> None:
        active = await _db(_active_versions)
        for mailbox_id in list(self.held):
            if active.get(mailbox_id) != self.held[mailbox_id].version:
                # Deactivated, deleted or changed in the admin: drop its connection (a changed
                # one is started again below, with its new settings).
                await self._drop(mailbox_id)
        gone = [mailbox_id for mailbox_id in self.held if mailbox_id not in active]
        if gone:
            # The leases first: a mailbox no longer held here has no lease of ours (and if the
            # release fails, the next refresh tries again for the mailboxes still listed).
            await _db(mailboxes_release_idle_leases, token=self.token, mailbox_ids=gone)
        for mailbox_id in gone:
            del self.held[mailbox_id]
        still_ours = await _db(
            mailboxes_renew_idle_leases, token=self.token, seconds=settings.MAILHUB_IDLE_LEASE_SECONDS
        )
        for mailbox_id in [mailbox_id for mailbox_id in self.held if mailbox_id not in still_ours]:
            # Our lease expired (this loop stalled longer than the lease) and another supervisor
            # took the mailbox over: it holds the connection now, not us.
            logger.warning("IDLE lease of mailbox %s was taken over: dropping our connection", mailbox_id)
            await self._drop(mailbox_id)
            del self.held[mailbox_id]
        wanted = [mailbox_id for mailbox_id in active if mailbox_id not in self.held]
        won = await _db(
            mailboxes_claim_idle_leases,
            mailbox_ids=wanted,
            token=self.token,
            seconds=settings.MAILHUB_IDLE_LEASE_SECONDS,
        )
        for mailbox_id in sorted(won):
            held = _Held(version=active[mailbox_id])
            held.task = asyncio.create_task(self._hold(mailbox_id, held), name=f"idle-{mailbox_id}")
            self.held[mailbox_id] = held
        self._report()

    async def _drop(self, mailbox_id: int) -> None:
        held = self.held.get(mailbox_id)
        self.without_idle.discard(mailbox_id)
        if held is not None and held.task is not None:
            held.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await held.task
            held.task = None

    async def shutdown(self) -> None:
        for mailbox_id in list(self.held):
            await self._drop(mailbox_id)
        self.held.clear()
        # The leases first: another supervisor may take over at once.
        await _db(mailboxes_release_idle_leases, token=self.token)
        # Waiting for queued polls is given up; an inline poll's thread still finishes before the
        # process exits (or is killed with it: the poll lease makes that safe).
        for gate in self.gates.values():
            if gate.task is not None:
                gate.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await gate.task

    def status(self) -> SupervisorStatus:
        return SupervisorStatus(
            live=sorted(mailbox_id for mailbox_id, held in self.held.items() if held.live),
            without_idle=sorted(self.without_idle),
            connecting=sorted(
                mailbox_id
                for mailbox_id, held in self.held.items()
                if not held.live and mailbox_id not in self.without_idle
            ),
        )

    def _report(self) -> None:
        status = self.status()
        counts = (len(status.live), len(status.without_idle))
        if counts != self._reported:
            self._reported = counts
            logger.info(
                "IDLE supervisor: %d mailbox(es) pushed by IDLE, %d without IDLE (left to polling), "
                "%d connecting",
                len(status.live),
                len(status.without_idle),
                len(status.connecting),
                extra={"idle_live": len(status.live), "idle_unsupported": len(status.without_idle)},
            )

    # -- one mailbox -----------------------------------------------------------------------------

    async def _hold(self, mailbox_id: int, held: _Held) -> None:
        """Keep one IDLE connection for the mailbox until cancelled (or the server lacks IDLE)."""
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                await self._connect_and_idle(mailbox_id, held)
                return  # no IDLE on this server: left to polling
            except (ImapError, SecretDecryptionError) as exc:
                # The message names no secret (see the gateways); the reason for the admin.
                logger.warning("IDLE of mailbox %s: %s", mailbox_id, exc, extra={"mailbox_id": mailbox_id})
            except Mailbox.DoesNotExist:
                return  # deleted meanwhile: the next refresh forgets it
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("IDLE of mailbox %s failed on our side", mailbox_id)
            if held.live:
                held.live = False
                with contextlib.suppress(Exception):
                    await _db(mailbox_set_idle_live, mailbox_id=mailbox_id, token=self.token, live=False)
            # A connection that idled for a while was fine: start the backoff again from the
            # first step. One dropped at once (a server refusing us) backs off further each time.
            lived = time.monotonic() - started
            attempt = 1 if lived > min(60.0, settings.MAILHUB_IDLE_RENEW_SECONDS) else attempt + 1
            delay = backoff_delay(
                attempt=attempt,
                first=settings.MAILHUB_IDLE_RECONNECT_FIRST,
                cap=settings.MAILHUB_POLL_BACKOFF_MAX,
                max_exponent=16,
                jitter=0.2,
            )
            await asyncio.sleep(delay.total_seconds())

    async def _connect_and_idle(self, mailbox_id: int, held: _Held) -> None:
        imap = await _db(_imap_settings, mailbox_id)
        connection = await idle_connect(imap, oauth2_token=imap.oauth2_token or None)
        try:
            if not connection.supports_idle:
                self.without_idle.add(mailbox_id)
                logger.warning(
                    "IDLE: the IMAP server of mailbox %s (%s:%s) does not offer IDLE: left to polling",
                    mailbox_id,
                    imap.host,
                    imap.port,
                    extra={"mailbox_id": mailbox_id},
                )
                self._report()
                await connection.logout()
                return
            await self._start_idle(connection, imap)
            if not await _db(mailbox_set_idle_live, mailbox_id=mailbox_id, token=self.token, live=True):
                return  # the lease is gone: the next refresh drops this task
            held.live = True
            self._report()
            # What arrived while no connection idled (first start, reconnect) is fetched now.
            self.request_poll(mailbox_id)
            await self._idle_loop(mailbox_id, connection, imap)
        except asyncio.CancelledError:
            connection.close()  # shutting down or dropped: no goodbye needed, the lease says it
            raise
        except BaseException:
            connection.close()
            raise

    async def _start_idle(self, connection: IdleConnection, imap: ImapSettings) -> None:
        try:
            await asyncio.wait_for(connection.idle(), imap.timeout)
        except TimeoutError as exc:
            raise ImapError(
                f"IMAP server {imap.host}:{imap.port} did not accept IDLE in time", permanent=False
            ) from exc
        self.idle_commands += 1

    async def _idle_loop(self, mailbox_id: int, connection: IdleConnection, imap: ImapSettings) -> None:
        renew_at = time.monotonic() + settings.MAILHUB_IDLE_RENEW_SECONDS
        while True:
            wait = min(settings.MAILHUB_IDLE_DEAD_AFTER, renew_at - time.monotonic())
            try:
                event = await asyncio.wait_for(connection.next_event(), max(wait, 0))
            except TimeoutError:
                # Renewal due, or silence for MAILHUB_IDLE_DEAD_AFTER: DONE both renews and
                # probes. A live server answers at once; a dead connection never does.
                try:
                    events = await asyncio.wait_for(connection.done(), imap.timeout)
                except TimeoutError as exc:
                    raise ImapError(
                        f"IMAP connection to {imap.host}:{imap.port} is dead (no answer to DONE "
                        f"within {imap.timeout:g}s): reconnecting",
                        permanent=False,
                    ) from exc
                if any(event.exists is not None for event in events):
                    self.request_poll(mailbox_id)
                await self._start_idle(connection, imap)
                renew_at = time.monotonic() + settings.MAILHUB_IDLE_RENEW_SECONDS
                continue
            if event.exists is not None:
                self.request_poll(mailbox_id)

    # -- polls -----------------------------------------------------------------------------------

    def request_poll(self, mailbox_id: int) -> None:
        gate = self.gates.setdefault(mailbox_id, _PollGate())
        gate.requested = True
        if gate.task is None or gate.task.done():
            gate.task = asyncio.create_task(self._run_polls(mailbox_id, gate), name=f"idle-poll-{mailbox_id}")

    async def _run_polls(self, mailbox_id: int, gate: _PollGate) -> None:
        while gate.requested:
            # Cleared before the poll starts: an arrival during the poll asks for one more.
            gate.requested = False
            try:
                await self.poll(mailbox_id)
            except Exception:
                logger.exception("IDLE: the poll of mailbox %s failed", mailbox_id)


def _active_versions() -> dict[int, datetime]:
    return dict(Mailbox.objects.active().values_list("pk", "updated_at"))


def _imap_settings(mailbox_id: int) -> ImapSettings:
    """The password, or for an OAuth2 mailbox a valid access token (refreshed by the same token
    service as the poll's, under its row lock). A refused token is not retried here: the next
    reconnection asks again, and the poll's own login marks a grant that needs reconnecting."""
    mailbox = Mailbox.objects.get(pk=mailbox_id, is_active=True)
    if mailbox.imap_auth != AuthMethod.OAUTH2:
        return mailbox.imap_settings()
    grant = mailbox_oauth_grant(mailbox=mailbox, purpose=GrantPurpose.IMAP)
    if grant is None:
        raise ImapError("IMAP is set to OAuth2 but the mailbox has no OAuth2 connection", permanent=True)
    try:
        token = oauth_access_token(grant_id=grant.pk)
    except OAuthGrantError as exc:
        raise ImapError(f"IMAP {exc}", permanent=exc.permanent) from exc
    return mailbox.imap_settings(oauth2_token=token.value)


# -- how a push turns into a poll ------------------------------------------------------------------


def inline_poll(*, threads: int | None = None) -> PollFunction:
    """The poll, processing and replies in this process's threads (no broker needed)."""
    from .pipeline import mailbox_poll_inline

    executor = ThreadPoolExecutor(
        max_workers=threads or settings.MAILHUB_IDLE_INLINE_POLLS, thread_name_prefix="idle-poll"
    )

    def run(mailbox_id: int) -> None:
        try:
            result = mailbox_poll_inline(mailbox_id=mailbox_id)
            logger.debug("IDLE poll: %s", result.summary)
        finally:
            connections.close_all()

    async def poll(mailbox_id: int) -> None:
        await asyncio.get_running_loop().run_in_executor(executor, run, mailbox_id)

    return poll


def queued_poll() -> PollFunction:
    """The poll as the worker's `poll_mailbox` task; done when the mailbox records a poll.

    The task keeps no result, so the end of a poll is read from the mailbox: its last_polled_at
    changes when a poll ends, ours or one that already held the poll lease (then ours was
    skipped, and the gate's next poll fetches what that one may have missed). A lost task stops
    the wait after MAILHUB_POLL_LEASE_SECONDS.
    """
    from .tasks import poll_mailbox

    def last_polled(mailbox_id: int) -> datetime | None:
        return Mailbox.objects.filter(pk=mailbox_id).values_list("last_polled_at", flat=True).first()

    async def poll(mailbox_id: int) -> None:
        before = await _db(last_polled, mailbox_id)
        await _db(poll_mailbox.delay, mailbox_id)
        deadline = time.monotonic() + settings.MAILHUB_POLL_LEASE_SECONDS
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            if await _db(last_polled, mailbox_id) != before:
                return

    return poll
