"""The IMAP IDLE gateway (RFC 2177): an asyncio client that does only what push needs. No ORM.

connect (implicit TLS / STARTTLS / plain, certificates always verified: mailboxes/tls.py),
CAPABILITY, log in, SELECT the folder, then IDLE: the server's untagged `EXISTS` responses are
reported, everything else (RECENT, EXPUNGE, FETCH, "* OK Still here") only counts as a sign of
life. imapclient is blocking (a thread per connection); one event loop holding 1,000 of these
needs a few KiB per connection instead.

Everything a server sends is bounded: a line longer than `max_line` bytes, or a literal larger
than that, ends the connection with an ImapError instead of growing a buffer (a hostile server
sending a 1 GB line costs at most `max_line` bytes). Errors are `mailboxes.imap.ImapError`
with the same `permanent` flag as the polling gateway, and name no secret.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from django.views.decorators.debug import sensitive_variables
from imapclient.imap_utf7 import encode as imap_utf7_encode

from .imap import ImapError, ImapSettings
from .tls import NOT_TLS_REASONS, CaFileError, Security, certificate_problem, verifying_context

# Long enough for any CAPABILITY or SELECT line a real server sends (Dovecot's CAPABILITY is
# ~300 bytes, a FLAGS line with many keywords a few KiB); RFC 7162 §4 asks clients to accept
# command lines of 8 KB, responses are of the same order.
DEFAULT_MAX_LINE = 64 * 1024

_TAGGED = re.compile(rb"^(?P<tag>[A-Za-z0-9]+) (?P<status>OK|NO|BAD)\b ?(?P<text>.*)$", re.IGNORECASE)
_NUMBERED = re.compile(rb"^\* (?P<number>\d+) (?P<name>[A-Za-z]+)\b", re.IGNORECASE)
_LITERAL = re.compile(rb"\{(?P<size>\d+)\+?\}$")
_CAPABILITY = re.compile(rb"(?:^\* CAPABILITY |\[CAPABILITY )(?P<caps>[^\]]*)", re.IGNORECASE)

T = TypeVar("T")


@dataclass(frozen=True)
class IdleEvent:
    """One untagged response received while idling; `exists` is set for `* n EXISTS`."""

    line: bytes
    exists: int | None = None


class IdleConnection:
    """One logged-in session with its folder selected; `idle()` / `next_event()` / `done()`.

    Not thread-safe: one task of one event loop uses it.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        imap: ImapSettings,
        *,
        max_line: int,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._imap = imap
        self._max_line = max_line
        self._tag_number = 0
        self._idle_tag: bytes | None = None
        self.capabilities: frozenset[str] = frozenset()
        self.idle_commands = 0  # IDLE commands sent on this connection (renewals included)

    # -- the session -----------------------------------------------------------------------------

    @property
    def supports_idle(self) -> bool:
        return "IDLE" in self.capabilities

    async def idle(self) -> None:
        """Send IDLE and wait for the server's continuation (RFC 2177 §3)."""
        if self._idle_tag is not None:
            raise RuntimeError("already idling")
        tag = self._next_tag()
        await self._send(tag + b" IDLE\r\n")
        while True:
            line = await self._read_line()
            if line.startswith(b"+"):
                break
            tagged = _TAGGED.match(line)
            if tagged and tagged["tag"] == tag:
                raise ImapError(f"IMAP server {self._where} refused IDLE: {_text(line)}", permanent=True)
        self._idle_tag = tag
        self.idle_commands += 1

    async def next_event(self) -> IdleEvent:
        """The next untagged response while idling (wrap it in a timeout: servers may be silent)."""
        if self._idle_tag is None:
            raise RuntimeError("not idling")
        line = await self._read_line()
        if line.startswith(b"* BYE"):
            raise ImapError(
                f"IMAP server {self._where} closed the IDLE session: {_text(line)}", permanent=False
            )
        tagged = _TAGGED.match(line)
        if tagged and tagged["tag"] == self._idle_tag:
            # RFC 2177 allows the server to end IDLE on its own (e.g. at its inactivity timeout).
            self._idle_tag = None
            raise ImapError(f"IMAP server {self._where} ended IDLE: {_text(line)}", permanent=False)
        numbered = _NUMBERED.match(line)
        if numbered and numbered["name"].upper() == b"EXISTS":
            return IdleEvent(line=line, exists=int(numbered["number"]))
        return IdleEvent(line=line)

    async def done(self) -> list[IdleEvent]:
        """End IDLE (DONE, RFC 2177 §3) and wait for the tagged answer; the events before it."""
        tag = self._idle_tag
        if tag is None:
            return []
        self._idle_tag = None
        await self._send(b"DONE\r\n")
        events: list[IdleEvent] = []
        while True:
            line = await self._read_line()
            tagged = _TAGGED.match(line)
            if tagged and tagged["tag"] == tag:
                if tagged["status"].upper() != b"OK":
                    raise ImapError(
                        f"IMAP server {self._where} answered DONE with {_text(line)}", permanent=False
                    )
                return events
            numbered = _NUMBERED.match(line)
            if numbered and numbered["name"].upper() == b"EXISTS":
                events.append(IdleEvent(line=line, exists=int(numbered["number"])))

    async def logout(self) -> None:
        """Best effort, never raises: LOGOUT, then close."""
        try:
            if self._idle_tag is not None:
                await asyncio.wait_for(self.done(), self._imap.timeout)
            await asyncio.wait_for(self._command(b"LOGOUT"), self._imap.timeout)
        except (ImapError, OSError, TimeoutError, EOFError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        self._writer.close()

    # -- connecting --------------------------------------------------------------------------------

    async def _start(self, oauth2_token: str | None) -> None:
        greeting = await self._read_line()
        if greeting.startswith(b"* BYE"):
            raise ImapError(
                f"IMAP server {self._where} refused the connection: {_text(greeting)}", permanent=False
            )
        if not greeting.startswith((b"* OK", b"* PREAUTH")):
            raise ImapError(
                f"IMAP server {self._where} sent no IMAP greeting: {_text(greeting)}", permanent=True
            )
        self._capabilities_from(greeting)
        if not self.capabilities:
            await self._capability()
        if self._imap.security == Security.STARTTLS:
            if "STARTTLS" not in self.capabilities:
                raise ImapError(
                    f"IMAP server {self._where} does not offer STARTTLS (the password was not sent): use "
                    "'ssl' with its implicit-TLS port (usually 993) if it has one",
                    permanent=True,
                )
            await self._command(b"STARTTLS")
            await self._writer.start_tls(_ssl_context(self._imap), server_hostname=self._imap.host)
            # RFC 3501 §6.2.1: capabilities learnt before STARTTLS are void.
            self.capabilities = frozenset()
            await self._capability()
        if not greeting.startswith(b"* PREAUTH"):
            await self._login(oauth2_token)
        # RFC 3501 §7.1: the capabilities may change after login (Dovecot sends them in the OK).
        await self._capability()
        await self._select()

    async def _capability(self) -> None:
        for line in await self._command(b"CAPABILITY"):
            self._capabilities_from(line)

    def _capabilities_from(self, line: bytes) -> None:
        match = _CAPABILITY.search(line)
        if match:
            words = match["caps"].decode("ascii", "replace").upper().split()
            self.capabilities = frozenset(words)

    @sensitive_variables()
    async def _login(self, oauth2_token: str | None) -> None:
        """XOAUTH2 with a token; else the rule of mailboxes/imap.py `_login`: AUTHENTICATE PLAIN
        (RFC 4616, UTF-8) when offered, else LOGIN, which only carries ASCII (RFC 3501 §6.2.3).

        The secret only ever goes to the socket: no line we log or raise quotes what we sent.
        """
        imap = self._imap
        if oauth2_token is not None:
            # Google's and Microsoft's SASL XOAUTH2: user=...^Aauth=Bearer <token>^A^A.
            payload = f"user={imap.username}\1auth=Bearer {oauth2_token}\1\1".encode()
            await self._authenticate(b"XOAUTH2", payload)
            return
        if "AUTH=PLAIN" in self.capabilities:
            await self._authenticate(b"PLAIN", f"\0{imap.username}\0{imap.password}".encode())
            return
        if not (imap.username.isascii() and imap.password.isascii()):
            raise ImapError(
                f"IMAP server {self._where} does not offer AUTHENTICATE PLAIN (AUTH=PLAIN), and its "
                "LOGIN command only carries ASCII: a username or password with non-ASCII characters "
                "can't be sent to it (the password was not sent)",
                permanent=True,
            )
        await self._command(
            b"LOGIN " + _quoted(imap.username) + b" " + _quoted(imap.password), secret=True, login=True
        )

    @sensitive_variables()
    async def _authenticate(self, mechanism: bytes, payload: bytes) -> None:
        """AUTHENTICATE (RFC 3501 §6.2.2): one continuation, our base64 answer, the tagged result."""
        tag = self._next_tag()
        await self._send(tag + b" AUTHENTICATE " + mechanism + b"\r\n")
        answered = False
        while True:
            line = await self._read_line()
            if line.startswith(b"+"):
                # A second challenge is an error description (XOAUTH2): answered empty (RFC 7628
                # §3.2.3 does the same for OAUTHBEARER), then the server says NO.
                await self._send(b"\r\n" if answered else base64.b64encode(payload) + b"\r\n")
                answered = True
                continue
            tagged = _TAGGED.match(line)
            if tagged and tagged["tag"] == tag:
                if tagged["status"].upper() == b"OK":
                    self._capabilities_from(line)
                    return
                raise ImapError(
                    f"IMAP login failed for {self._imap.username!r} on {self._where}: {_text(line)}",
                    permanent=True,
                )

    async def _select(self) -> None:
        # RFC 3501 §5.1.3: folder names travel in modified UTF-7.
        folder = imap_utf7_encode(self._imap.folder)
        try:
            await self._command(b"SELECT " + _quoted_bytes(folder))
        except ImapError as exc:
            raise ImapError(
                f"IMAP folder {self._imap.folder!r} could not be selected on {self._where}: {exc}",
                permanent=True,
            ) from exc

    # -- the wire --------------------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return f"{self._imap.host}:{self._imap.port}"

    def _next_tag(self) -> bytes:
        self._tag_number += 1
        return b"M%d" % self._tag_number

    async def _send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def _command(self, command: bytes, *, secret: bool = False, login: bool = False) -> list[bytes]:
        """Send one command; its untagged lines, or ImapError on NO/BAD (never quoting `command`)."""
        tag = self._next_tag()
        await self._send(tag + b" " + command + b"\r\n")
        untagged: list[bytes] = []
        while True:
            line = await self._read_line()
            tagged = _TAGGED.match(line)
            if tagged and tagged["tag"] == tag:
                if tagged["status"].upper() == b"OK":
                    self._capabilities_from(line)
                    return untagged
                name = "LOGIN" if secret else command.split(b" ", 1)[0].decode("ascii", "replace")
                if login:
                    raise ImapError(
                        f"IMAP login failed for {self._imap.username!r} on {self._where}: {_text(line)}",
                        permanent=True,
                    )
                raise ImapError(f"IMAP {name} failed on {self._where}: {_text(line)}", permanent=False)
            untagged.append(line)

    async def _read_line(self) -> bytes:
        """One response line without CRLF, its literals inlined; bounded by `max_line` in total."""
        line = await self._read_raw_line()
        while (literal := _LITERAL.search(line)) is not None:
            size = int(literal["size"])
            if len(line) + size > self._max_line:
                raise ImapError(
                    f"IMAP server {self._where} sent a literal of {size} bytes, more than the "
                    f"{self._max_line} accepted on an IDLE connection",
                    permanent=False,
                )
            data = await self._guard(self._reader.readexactly(size))
            line += b"\r\n" + data + await self._read_raw_line()
            if len(line) > self._max_line:
                raise self._too_long()
        return line

    async def _read_raw_line(self) -> bytes:
        try:
            line = await self._guard(self._reader.readuntil(b"\r\n"))
        except asyncio.LimitOverrunError:
            raise self._too_long() from None
        return line[:-2]

    async def _guard(self, read: Awaitable[T]) -> T:
        try:
            return await read
        except asyncio.IncompleteReadError as exc:
            raise ImapError(
                f"IMAP connection to {self._where} closed by the server", permanent=False
            ) from exc
        except (ConnectionError, ssl.SSLError) as exc:
            raise ImapError(f"IMAP connection to {self._where} failed: {exc}", permanent=False) from exc

    def _too_long(self) -> ImapError:
        return ImapError(
            f"IMAP server {self._where} sent a line longer than {self._max_line} bytes: connection dropped",
            permanent=False,
        )


async def idle_connect(
    imap: ImapSettings, *, oauth2_token: str | None = None, max_line: int = DEFAULT_MAX_LINE
) -> IdleConnection:
    """A logged-in IdleConnection with `imap.folder` selected, within `imap.timeout` seconds.

    `oauth2_token`: log in with SASL XOAUTH2 (an OAuth2 access token instead of the password);
    the seam for OAuth2 mailboxes, whose token the caller obtains and refreshes.
    Check `supports_idle` before `idle()`: a server without IDLE is left to polling.
    """
    context = _ssl_context(imap) if imap.security == Security.SSL else None
    where = f"{imap.host}:{imap.port}"
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                imap.host,
                imap.port,
                ssl=context,
                server_hostname=imap.host if context else None,
                # The StreamReader's buffer limit: readuntil() raises LimitOverrunError beyond it.
                limit=max_line + 2,
            ),
            imap.timeout,
        )
    except ssl.SSLCertVerificationError as exc:
        raise ImapError(
            f"IMAP TLS certificate of {where} rejected: {certificate_problem(exc, imap.ca_file)}",
            permanent=True,
        ) from exc
    except ssl.SSLError as exc:
        hint = " (security setting mismatch? 'ssl' is implicit TLS)" if exc.reason in NOT_TLS_REASONS else ""
        raise ImapError(f"IMAP TLS error with {where}: {exc}{hint}", permanent=True) from exc
    except ConnectionRefusedError as exc:
        raise ImapError(f"IMAP connection to {where} refused", permanent=False) from exc
    except TimeoutError as exc:
        raise ImapError(f"IMAP connection to {where} timed out", permanent=False) from exc
    except OSError as exc:
        raise ImapError(f"IMAP connection to {where} failed: {exc}", permanent=False) from exc
    connection = IdleConnection(reader, writer, imap, max_line=max_line)
    try:
        await asyncio.wait_for(connection._start(oauth2_token), imap.timeout)
    except TimeoutError as exc:
        connection.close()
        raise ImapError(f"IMAP server {where} did not answer in {imap.timeout:g}s", permanent=False) from exc
    except ssl.SSLCertVerificationError as exc:
        connection.close()
        raise ImapError(
            f"IMAP TLS certificate of {where} rejected: {certificate_problem(exc, imap.ca_file)}",
            permanent=True,
        ) from exc
    except ImapError:
        connection.close()
        raise
    except (OSError, EOFError) as exc:
        connection.close()
        raise ImapError(f"IMAP connection to {where} failed: {exc}", permanent=False) from exc
    return connection


def _ssl_context(imap: ImapSettings) -> ssl.SSLContext:
    try:
        return verifying_context(imap.ca_file)
    except CaFileError as exc:
        raise ImapError(f"IMAP {exc}", permanent=True) from exc


def _quoted(text: str) -> bytes:
    return _quoted_bytes(text.encode("ascii"))


def _quoted_bytes(data: bytes) -> bytes:
    """An RFC 3501 §4.3 quoted string; CR/LF can't be quoted (nor sent: they end the command)."""
    if b"\r" in data or b"\n" in data or b"\0" in data:
        raise ImapError("IMAP string with a line break or NUL can't be sent (not sent)", permanent=True)
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _text(line: bytes) -> str:
    """A server line for an error message: bounded, printable."""
    return line[:200].decode("utf-8", "replace")
