"""The IMAP gateway: the only module that talks IMAP (imapclient). No ORM here.

Errors are translated into `ImapError` with a `permanent` flag: permanent ones (bad credentials,
missing folder, TLS misconfiguration) need an admin; transient ones (refused, timeout, dropped
connection) are retried with backoff.

TLS modes are `tls.Security`; STARTTLS refuses to log in when the server does not offer it, and
certificates are always verified (see mailboxes/tls.py).
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import imapclient
from django.views.decorators.debug import sensitive_variables
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError, ProtocolError

from . import sasl
from .tls import NOT_TLS_REASONS, CaFileError, Security, certificate_problem, speaks_tls, verifying_context


@dataclass(frozen=True)
class ImapSettings:
    host: str
    port: int
    security: Security
    username: str
    password: str = field(repr=False)  # never in a repr, a log line or a traceback
    folder: str = "INBOX"
    timeout: float = 30.0
    ca_file: str = ""  # PEM CA bundle trusted in addition to the system CAs (MAILHUB_TLS_CA_FILE)
    # An OAuth2 access token: when set, the login is AUTHENTICATE OAUTHBEARER / XOAUTH2 with it
    # instead of the password (which must then be empty). Only the token: getting and refreshing
    # it is the caller's business. Never in a repr, a log line or a traceback, like the password.
    oauth2_token: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.oauth2_token and self.password:
            raise ValueError("ImapSettings takes a password or an OAuth2 token, not both")


class ImapError(Exception):
    def __init__(self, message: str, *, permanent: bool, auth_failed: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        #: The server refused the credentials (password or OAuth2 token). With a token, the
        #: caller may retry once with a freshly refreshed one before asking for a reconnection.
        self.auth_failed = auth_failed


@dataclass(frozen=True)
class FolderStatus:
    uidvalidity: int
    uidnext: int | None  # None: the server left UIDNEXT out of its SELECT answer
    message_count: int


def _ssl_context(imap: ImapSettings) -> ssl.SSLContext:
    try:
        return verifying_context(imap.ca_file)
    except CaFileError as exc:
        raise ImapError(f"IMAP {exc}", permanent=True) from exc


def _translate(exc: BaseException, imap: ImapSettings) -> ImapError:
    where = f"{imap.host}:{imap.port}"
    if isinstance(exc, LoginError):
        method = " with an OAuth2 token" if imap.oauth2_token else ""
        if "[UNAVAILABLE]" in str(exc).upper():
            # RFC 5530 §3: the server could not check the credentials right now (its identity
            # provider or user database is down): try again later, the credentials may be fine.
            return ImapError(
                f"IMAP server {where} could not check the login{method} of {imap.username!r} for now: {exc}",
                permanent=False,
            )
        return ImapError(
            f"IMAP login{method} failed for {imap.username!r} on {where}: {exc}",
            permanent=True,
            auth_failed=True,
        )
    if isinstance(exc, socket.gaierror):
        return ImapError(f"IMAP host {imap.host!r} not found (DNS): {exc}", permanent=False)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ImapError(
            f"IMAP TLS certificate of {where} rejected: {certificate_problem(exc, imap.ca_file)}",
            permanent=True,
        )
    if isinstance(exc, ssl.SSLError) and imap.security == Security.SSL and exc.reason in NOT_TLS_REASONS:
        return ImapError(
            f"IMAP server {where} did not answer in TLS: security setting mismatch? 'ssl' is "
            f"implicit TLS (usually port 993); a plain port (usually 143) needs 'starttls' ({exc})",
            permanent=True,
        )
    if isinstance(exc, ssl.SSLError):
        return ImapError(f"IMAP TLS error with {where}: {exc}", permanent=True)
    if isinstance(exc, ConnectionRefusedError):
        return ImapError(f"IMAP connection to {where} refused", permanent=False)
    if isinstance(exc, TimeoutError):
        return ImapError(f"IMAP connection to {where} timed out", permanent=False)
    if isinstance(exc, OSError | imapclient.exceptions.IMAPClientAbortError | EOFError):
        return ImapError(f"IMAP connection to {where} failed: {exc}", permanent=False)
    return ImapError(f"IMAP error on {where}: {exc}", permanent=False)


@contextmanager
def imap_session(imap: ImapSettings) -> Iterator[ImapConnection]:
    """A logged-in session; always logged out (or closed) afterwards.

    Only the session's own operations are translated into ImapError: an error raised by the
    caller's code inside the `with` (a full disk while storing, say) passes through unchanged,
    so that it is never reported as a problem of the mail server.
    """
    context = _ssl_context(imap) if imap.security in (Security.SSL, Security.STARTTLS) else None
    try:
        client = imapclient.IMAPClient(
            imap.host,
            port=imap.port,
            ssl=imap.security == Security.SSL,
            ssl_context=context if imap.security == Security.SSL else None,
            timeout=imap.timeout,
        )
    except (OSError, IMAPClientError) as exc:
        if imap.security != Security.SSL and isinstance(exc, TimeoutError) and _tls_port(imap):
            raise ImapError(
                f"IMAP server {imap.host}:{imap.port} expects TLS from the first byte (no plain-text "
                "greeting): security setting mismatch? This port needs 'ssl' (implicit TLS)",
                permanent=True,
            ) from exc
        raise _translate(exc, imap) from exc
    client.normalise_times = False  # keep INTERNALDATE's zone instead of naive local time
    try:
        if imap.security == Security.STARTTLS:
            if not client.has_capability("STARTTLS"):
                raise ImapError(
                    f"IMAP server {imap.host}:{imap.port} does not offer STARTTLS (the password was not "
                    "sent): use 'ssl' with its implicit-TLS port (usually 993) if it has one",
                    permanent=True,
                )
            client.starttls(context)
        _login(client, imap)
    except ImapError:
        _close_quietly(client)
        raise
    except (OSError, IMAPClientError, EOFError) as exc:
        _close_quietly(client)
        raise _translate(exc, imap) from exc
    except Exception as exc:
        # Whatever else goes wrong while the credentials are handled: its text may quote them
        # (an encoder names the character it choked on), so only its type is reported.
        _close_quietly(client)
        raise ImapError(
            f"IMAP login to {imap.host}:{imap.port} failed on our side ({type(exc).__name__})",
            permanent=False,
        ) from exc
    try:
        yield ImapConnection(client, imap)
    except BaseException:
        _close_quietly(client)
        raise
    else:
        try:
            client.logout()
        except (OSError, IMAPClientError, EOFError):
            _close_quietly(client)


# Every frame below this one (imapclient's, imaplib's) is shown without its variables in Django's
# error report: they hold the password or its base64 form.
@sensitive_variables()
def _login(client: imapclient.IMAPClient, imap: ImapSettings) -> None:
    """AUTHENTICATE PLAIN when offered, else LOGIN, which can only carry ASCII.

    RFC 3501 §6.2.3: LOGIN's arguments are 7-bit strings (imaplib encodes them as ASCII), while
    SASL PLAIN (RFC 4616 §2) carries the authentication identity and password in UTF-8, through
    AUTHENTICATE (RFC 3501 §6.2.2; AUTH=PLAIN capability). After STARTTLS imapclient asks for the
    capabilities again, as RFC 3501 §6.2.1 requires.
    """
    if imap.oauth2_token:
        _login_oauth2(client, imap)
        return
    if client.has_capability("AUTH=PLAIN"):
        credentials = f"\0{imap.username}\0{imap.password}"
        client.sasl_login("PLAIN", lambda _challenge: credentials)
        return
    if not (imap.username.isascii() and imap.password.isascii()):
        raise ImapError(
            f"IMAP server {imap.host}:{imap.port} does not offer AUTHENTICATE PLAIN (AUTH=PLAIN), "
            "and its LOGIN command only carries ASCII: a username or password with non-ASCII "
            "characters can't be sent to it (the password was not sent)",
            permanent=True,
        )
    client.login(imap.username, imap.password)


@sensitive_variables()
def _login_oauth2(client: imapclient.IMAPClient, imap: ImapSettings) -> None:
    """AUTHENTICATE OAUTHBEARER (RFC 7628) when offered, else XOAUTH2 (Microsoft 365 offers only
    this one; Gmail both).

    Not imapclient's oauth2_login / oauthbearer_login: their callback answers every challenge
    with the credential, so on a refused token they send it a second time in reply to the error
    challenge, where RFC 7628 §3.2.3 wants %x01 and XOAUTH2 an empty response (see sasl.py).
    """
    where = f"{imap.host}:{imap.port}"
    problem = sasl.bearer_token_problem(imap.oauth2_token) or sasl.username_problem(imap.username)
    if problem:
        raise ImapError(f"IMAP login to {where} not attempted: {problem} (nothing was sent)", permanent=True)
    mechanism: sasl.Mechanism
    if client.has_capability("AUTH=OAUTHBEARER"):
        mechanism = "OAUTHBEARER"
    elif client.has_capability("AUTH=XOAUTH2"):
        mechanism = "XOAUTH2"
    else:
        raise ImapError(
            f"IMAP server {where} offers neither AUTHENTICATE OAUTHBEARER nor XOAUTH2, which an "
            "OAuth2 login needs (the token was not sent)",
            permanent=True,
        )
    exchange = _BearerExchange(mechanism, sasl.initial_response(mechanism, imap.username, imap.oauth2_token))
    try:
        client.sasl_login(mechanism, exchange)
    except LoginError as exc:
        status = f" (OAuth2 status {exchange.status!r})" if exchange.status else ""
        raise LoginError(f"{mechanism}: {exc}{status}") from exc


class _BearerExchange:
    """The client side of one OAUTHBEARER / XOAUTH2 exchange: the credential once, then the
    error-challenge answer (remembering the challenge's status for the error message)."""

    def __init__(self, mechanism: sasl.Mechanism, credential: bytes) -> None:
        self._mechanism = mechanism
        self._credential: bytes | None = credential
        self.status = ""

    def __repr__(self) -> str:
        return f"<_BearerExchange {self._mechanism}>"

    def __call__(self, challenge: bytes) -> bytes:
        if self._credential is not None:
            credential, self._credential = self._credential, None
            return credential
        self.status = sasl.error_status(challenge)
        return sasl.ERROR_CHALLENGE_ANSWER[self._mechanism]


def _tls_port(imap: ImapSettings) -> bool:
    """After a greeting timeout in plain text: does the port wait for a TLS hello instead?"""
    # System CAs suffice: a certificate failing verification still proves TLS is spoken there.
    return speaks_tls(imap.host, imap.port, min(imap.timeout, 5.0))


def _close_quietly(client: imapclient.IMAPClient) -> None:
    with suppress(OSError, IMAPClientError, EOFError):
        client.shutdown()


def imap_check_connection(imap: ImapSettings) -> str:
    """Log in, select the folder, and say what was found (for the admin's 'Test connection')."""
    with imap_session(imap) as connection:
        status = connection.select_folder()
    return (
        f"IMAP OK: logged in to {imap.host}:{imap.port} as {imap.username!r}, folder {imap.folder!r} "
        f"has {status.message_count} message(s) (UIDVALIDITY {status.uidvalidity})."
    )


@dataclass(frozen=True)
class FetchedMessage:
    uid: int
    raw: bytes
    internal_date: datetime | None
    # A placeholder for a message the server keeps listing but never delivers (raw is b"").
    undelivered: bool = False


@dataclass(frozen=True)
class FetchOutcome:
    """What one batch FETCH gave, UID by UID: every asked-for UID is in exactly one list."""

    messages: list[FetchedMessage]
    # Not delivered, and a fresh UID SEARCH no longer lists them: expunged, safe to pass over.
    gone: list[int]
    # Not delivered although UID SEARCH still lists them: the cursor must not pass them.
    undelivered: list[int]


# Dovecot refuses command lines over 64 KiB: long UID lists are sent in chunks.
_UIDS_PER_COMMAND = 2000

# RFC 4315 §3: "OK [APPENDUID <uidvalidity> <uid>]" when the server has UIDPLUS.
_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]", re.IGNORECASE)
# RFC 3501 §6.3.11: "NO [TRYCREATE]" when APPEND failed only because the folder does not exist.
_TRYCREATE = "[TRYCREATE]"
_TRANSIENT_CODES = ("UNAVAILABLE", "SERVERBUG", "INUSE", "LIMIT", "OVERQUOTA")


class _AppendRefused(Exception):
    """The server answered NO (or BAD) to an APPEND; `text` is its answer."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class ImapConnection:
    """The IMAP operations mailhub needs, on one logged-in session."""

    def __init__(self, client: imapclient.IMAPClient, imap: ImapSettings) -> None:
        self._client = client
        self._imap = imap

    def _nz_number(self, value: int | str | bytes, what: str) -> int:
        """A UID, UIDVALIDITY or UIDNEXT as RFC 3501 §9 defines them: nz-number, a 32-bit unsigned
        integer. A hostile or broken server sending anything else gets a clear permanent error
        instead of a value no database column can hold (the cursor would never move again)."""
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = -1
        if not 0 < number < 2**32:
            raise ImapError(
                f"IMAP server {self._imap.host}:{self._imap.port} sent {what} {str(value)[:40]!r}, "
                "outside RFC 3501's 1..4294967295",
                permanent=True,
            )
        return number

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        try:
            yield
        except ImapError:
            raise
        except (OSError, IMAPClientError, EOFError) as exc:
            raise _translate(exc, self._imap) from exc

    def select_folder(self) -> FolderStatus:
        """SELECT read-only: we never change the shared mailbox (flags stay as its people left
        them)."""
        with self._translated_errors():
            try:
                response = self._client.select_folder(self._imap.folder, readonly=True)
            except IMAPClientError as exc:
                if not self._client.folder_exists(self._imap.folder):
                    raise ImapError(
                        f"IMAP folder {self._imap.folder!r} does not exist for {self._imap.username!r}",
                        permanent=True,
                    ) from exc
                raise
        if b"UIDVALIDITY" not in response:
            # RFC 3501 §2.3.1.1: without UIDVALIDITY a UID means nothing across sessions, so no
            # cursor could be kept safely.
            raise ImapError(
                f"IMAP server {self._imap.host}:{self._imap.port} sent no UIDVALIDITY for folder "
                f"{self._imap.folder!r}: its UIDs can't be trusted between sessions",
                permanent=True,
            )
        # RFC 3501 §6.3.1 says UIDNEXT is REQUIRED in the SELECT answer, but some servers leave it
        # out: None then, never 0 (0 would make every message already there look new).
        uidnext = response.get(b"UIDNEXT")
        return FolderStatus(
            uidvalidity=self._nz_number(response[b"UIDVALIDITY"], "UIDVALIDITY"),
            uidnext=self._nz_number(uidnext, "UIDNEXT") if uidnext is not None else None,
            message_count=int(response.get(b"EXISTS", 0)),
        )

    def highest_uid(self) -> int:
        """The highest UID in the folder, 0 if it is empty (for a server that omits UIDNEXT).

        `UID SEARCH ALL` rather than `UID FETCH *`: imapclient 4 keys FETCH answers by the UIDs
        asked for and can't map "*", and SEARCH answers an empty folder without an error.
        """
        with self._translated_errors():
            found = self._client.search(["ALL"])
        return max((self._nz_number(uid, "UID") for uid in found), default=0)

    def sizes_after(self, last_uid: int) -> dict[int, int | None]:
        """UID -> RFC822.SIZE of every message above `last_uid`; None when the size is unknown.

        The UIDs come from UID SEARCH, the sizes from UID FETCH: a UID that the size answer leaves
        out (or answers without RFC822.SIZE) is still listed, with None, so that it is fetched
        (alone) rather than silently passed over.

        RFC 3501 §6.4.8: "n:*" always includes the highest UID even when it is below n, so the
        result is filtered again here.
        """
        with self._translated_errors():
            found = self._client.search(["UID", f"{last_uid + 1}:*"])
            uids = sorted(
                {uid for uid in (self._nz_number(value, "UID") for value in found) if uid > last_uid}
            )
            sizes: dict[int, int | None] = dict.fromkeys(uids)
            for start in range(0, len(uids), _UIDS_PER_COMMAND):
                chunk = uids[start : start + _UIDS_PER_COMMAND]
                # imapclient 4 returns only the UIDs asked for; an unsolicited FETCH without UID
                # (e.g. Dovecot's FLAGS updates) is keyed by its sequence number and may land on
                # one of them without RFC822.SIZE: that size stays unknown.
                for uid, data in self._client.fetch(chunk, ["RFC822.SIZE"]).items():
                    size = data.get(b"RFC822.SIZE")
                    if isinstance(size, int) and size >= 0:
                        sizes[int(uid)] = size
        return sizes

    def search_since(self, since: date) -> set[int]:
        with self._translated_errors():
            return {int(uid) for uid in self._client.search(["SINCE", since])}

    def fetch_messages(self, uids: list[int]) -> FetchOutcome:
        """Whole messages with BODY.PEEK[], so that \\Seen flags stay untouched (RFC 3501 §6.4.5).

        A UID whose answer carries no BODY[] literal (real servers do this under load or for a
        message being expunged; or the entry is only an unsolicited FETCH FLAGS that imapclient
        filed under a sequence number equal to the UID) is fetched again alone. If that fails too,
        a fresh `UID SEARCH UID <uid>` decides: not listed any more means expunged (RFC 3501
        §7.4.1), anything else means the server holds it but did not deliver it.
        """
        wanted = sorted(set(uids))
        response = self._fetch_bodies(wanted)
        messages: list[FetchedMessage] = []
        missing: list[int] = []
        for uid in wanted:
            # Popped: drop the response's reference early, messages can be large. imapclient 4
            # drops answers for UIDs not asked for, so nothing else is stored under our UIDs.
            message = _fetched_message(uid, response.pop(uid, None))
            if message is None:
                missing.append(uid)
            else:
                messages.append(message)
        gone: list[int] = []
        undelivered: list[int] = []
        for uid in missing:
            with self._translated_errors():
                alone = _fetched_message(uid, self._fetch_bodies([uid]).get(uid))
                if alone is not None:
                    messages.append(alone)
                elif uid in {int(found) for found in self._client.search(["UID", str(uid)])}:
                    undelivered.append(uid)
                else:
                    gone.append(uid)
        messages.sort(key=lambda message: message.uid)
        return FetchOutcome(messages=messages, gone=gone, undelivered=undelivered)

    # -- the Sent folder ------------------------------------------------------------------------

    def _select_other(self, folder: str) -> bool:
        """EXAMINE (read-only SELECT) `folder`; False when it does not exist."""
        with self._translated_errors():
            try:
                self._client.select_folder(folder, readonly=True)
            except IMAPClientError:
                if not self._client.folder_exists(folder):
                    return False
                raise
        return True

    def find_message_id(self, folder: str, message_id: str) -> list[int]:
        """UIDs of the messages of `folder` whose Message-ID is `message_id` ([] when the folder
        does not exist).

        `UID SEARCH HEADER Message-ID <id>` (RFC 3501 §6.4.4) matches a substring, case
        insensitively: each hit's Message-ID field is fetched and compared whole (angle brackets
        and whitespace ignored, case kept as RFC 5322 §3.6.4 compares ids), so an id that merely
        contains ours is not taken for it.

        The id is data, never command syntax: imapclient quotes a search value only when it holds
        a space, a quote or a backslash, so an id with "(" or "{" would be spliced into the
        command. An ASCII id goes as a quoted string we build (RFC 3501 §4.3: backslash and quote
        escaped), a non-ASCII one (RFC 6532) as a literal with CHARSET UTF-8, which carries any
        octet. No control character fits either form, so such an id is refused.
        """
        wanted = _bare_message_id(message_id)
        if not wanted or any(ord(char) < 0x20 or ord(char) == 0x7F for char in wanted):
            raise ImapError(f"Message-ID {message_id[:80]!r} can't be searched for", permanent=True)
        if not self._select_other(folder):
            return []
        criteria: bytes | list[str]
        if wanted.isascii():
            escaped = wanted.replace("\\", "\\\\").replace('"', '\\"')
            criteria, charset = f'HEADER Message-ID "{escaped}"'.encode("ascii"), None
        else:
            criteria, charset = ["HEADER", "Message-ID", wanted], "UTF-8"  # 8-bit: sent as a literal
        with self._translated_errors():
            found = sorted(
                self._nz_number(uid, "UID") for uid in self._client.search(criteria, charset=charset)
            )
            if not found:
                return []
            field_name = b"BODY[HEADER.FIELDS (MESSAGE-ID)]"
            headers = self._client.fetch(found, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
        matching = []
        for uid in found:
            value = headers.get(uid, {}).get(field_name)
            if isinstance(value, bytes | bytearray) and _header_message_id(bytes(value)) == wanted:
                matching.append(uid)
        return matching

    def append_message(
        self, folder: str, raw: bytes, *, flags: tuple[bytes, ...], when: datetime | None
    ) -> int | None:
        """APPEND `raw` to `folder` with `flags` and `when` as its INTERNALDATE (RFC 3501 §6.3.11).

        Returns the new message's UID from APPENDUID when the server has UIDPLUS (RFC 4315 §3),
        else None. On `NO [TRYCREATE]` the folder is created and the APPEND sent once more: the
        first one stored nothing (the server says so with that code), so this can't make two
        copies.
        """
        with self._translated_errors():
            try:
                answer = self._append_once(folder, raw, flags, when)
            except _AppendRefused as refused:
                if _TRYCREATE not in refused.text.upper():
                    raise self._append_error(folder, refused) from refused
                try:
                    self._client.create_folder(folder)
                except (IMAPClientAbortError, ProtocolError):
                    raise
                except IMAPClientError as exc:
                    raise ImapError(
                        f"IMAP folder {folder!r} does not exist and can't be created: {str(exc)[:300]}",
                        permanent=True,
                    ) from exc
                with suppress(IMAPClientError):
                    self._client.subscribe_folder(folder)  # so that mail clients list it
                try:
                    answer = self._append_once(folder, raw, flags, when)
                except _AppendRefused as again:
                    raise self._append_error(folder, again) from again
            has_uidplus = self._client.has_capability("UIDPLUS")
        match = _APPENDUID.search(answer) if has_uidplus else None
        return self._nz_number(match.group(2), "UID") if match else None

    def _append_once(self, folder: str, raw: bytes, flags: tuple[bytes, ...], when: datetime | None) -> bytes:
        try:
            answer = self._client.append(folder, raw, flags, when)
        except (IMAPClientAbortError, ProtocolError):
            raise  # the connection, not the server's answer: transient
        except IMAPClientError as exc:  # a tagged NO (or BAD)
            raise _AppendRefused(str(exc)) from exc
        return answer if isinstance(answer, bytes) else b""

    def _append_error(self, folder: str, refused: _AppendRefused) -> ImapError:
        """A refused APPEND: permanent unless its response code says the server will take it later
        (RFC 5530: UNAVAILABLE, SERVERBUG, INUSE, LIMIT, OVERQUOTA)."""
        upper = refused.text.upper()
        transient = any(f"[{code}" in upper for code in _TRANSIENT_CODES)
        return ImapError(
            f"IMAP server {self._imap.host}:{self._imap.port} refused to append to folder {folder!r}: "
            f"{refused.text[:300]}",
            permanent=not transient,
        )

    def _fetch_bodies(self, uids: list[int]) -> dict[int, dict[bytes, Any]]:
        """UID FETCH of the bodies; a tagged NO counts as an answer without any of them.

        Servers answer NO when some of the messages can't be fetched (RFC 3501 §7.1.2; RFC 5530
        EXPUNGEISSUED; Gmail's "Some messages could not be FETCHed"), and imapclient then drops
        the partial answer: each UID is fetched again alone and, failing that, UID SEARCH
        decides. BAD, a broken connection or an unparsable answer stay errors.
        """
        with self._translated_errors():
            try:
                answer: dict[int, dict[bytes, Any]] = self._client.fetch(
                    uids, ["BODY.PEEK[]", "INTERNALDATE"]
                )
                return answer
            except (IMAPClientAbortError, ProtocolError):
                raise
            except IMAPClientError as exc:
                # imapclient's wording for a tagged NO (imaplib raises "... command error: BAD").
                if not str(exc).startswith("fetch failed:"):
                    raise
                return {}


def _bare_message_id(value: str) -> str:
    """A msg-id without its angle brackets and whitespace (RFC 5322 §3.6.4; CFWS around it and
    folding inside it are not part of the id)."""
    return re.sub(r"\s+", "", value).strip("<>")


def _header_message_id(field: bytes) -> str:
    """The id in a fetched "Message-ID: <...>" field (folded or not), bare."""
    text = field.decode("utf-8", "replace")
    name, _, value = text.partition(":")
    if name.strip().lower() != "message-id":
        return ""
    return _bare_message_id(value)


def _fetched_message(uid: int, data: dict[bytes, Any] | None) -> FetchedMessage | None:
    """The message in one FETCH answer, or None when the answer has no BODY[] literal."""
    raw = data.get(b"BODY[]") if data else None
    if not isinstance(raw, bytes | bytearray):  # absent, or NIL
        return None
    internal = data.get(b"INTERNALDATE") if data else None
    if not isinstance(internal, datetime):
        internal = None
    elif internal.tzinfo is None:
        internal = internal.replace(tzinfo=UTC)
    return FetchedMessage(uid=uid, raw=bytes(raw), internal_date=internal)


def plan_fetch_batches(sizes: dict[int, int | None], *, max_bytes: int, max_count: int) -> list[list[int]]:
    """Group UIDs (ascending) into batches of at most `max_bytes` (a larger message goes alone).

    A UID of unknown size (None) goes alone too: it may be of any size.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    current_bytes = 0
    for uid in sorted(sizes):
        size = sizes[uid]
        if size is None:
            if current:
                batches.append(current)
                current, current_bytes = [], 0
            batches.append([uid])
            continue
        if current and (current_bytes + size > max_bytes or len(current) >= max_count):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(uid)
        current_bytes += size
    if current:
        batches.append(current)
    return batches
