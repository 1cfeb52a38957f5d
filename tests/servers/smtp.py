"""An in-process SMTP server (aiosmtpd) that records what it receives.

It can require AUTH (LOGIN/PLAIN, allowed without TLS since it only listens on loopback), offer
STARTTLS or speak implicit TLS with the certificates of tls.py, answer temporary failures on
demand, and be stopped and restarted on the same port to simulate an SMTP outage.
"""

import base64
import binascii
import collections
import json
import logging
import threading
import time
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from .common import LOCALHOST, ManagedServer, free_port, register_running, unregister_running
from .oauth import OAuthKeys
from .tls import TlsFiles

# aiosmtpd logs every connection at INFO from its own thread, which can outlive a test's captured
# stream and print "--- Logging error ---" tracebacks: only its warnings are worth seeing here.
logging.getLogger("mail.log").setLevel(logging.WARNING)

FailureStage = Literal["rcpt", "data"]


@dataclass(frozen=True)
class ReceivedMessage:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes  # as received after DATA (CRLF line ends, dot-unstuffed)
    # Parsed with email.policy.default from `raw` with LF line ends, so that get_content()
    # compares equal to ordinary Python strings.
    message: EmailMessage
    auth_login: str | None  # username of a successful AUTH, None without AUTH
    auth_mechanism: str | None = None  # XOAUTH2 / OAUTHBEARER; None for a password or no AUTH


@dataclass(frozen=True)
class BearerLogin:
    """The auth data of a successful XOAUTH2 / OAUTHBEARER login."""

    login: bytes
    mechanism: str


@dataclass(frozen=True)
class BearerFailure:
    """One refused XOAUTH2 / OAUTHBEARER login: why, and what the client answered to the error
    challenge (b"" for XOAUTH2 and b"\x01" for OAUTHBEARER, RFC 7628 §3.2.3; never the token)."""

    mechanism: str
    reason: str
    answer: bytes | None


class RecordingSmtpServer(ManagedServer):
    """aiosmtpd Controller on 127.0.0.1 recording every accepted message.

    With `username`/`password`, AUTH LOGIN/PLAIN is advertised and required before MAIL FROM;
    wrong credentials get `535 5.7.8`.

    With `tls`, STARTTLS is offered (not required); with `implicit_tls=True` as well, the port
    speaks TLS from the first byte instead (SMTPS, like port 465) and offers no STARTTLS.
    `wrong_host=True` presents a certificate of the same CA that names another host.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        host: str = LOCALHOST,
        tls: TlsFiles | None = None,
        implicit_tls: bool = False,
        wrong_host: bool = False,
        oauth: OAuthKeys | None = None,
    ) -> None:
        if (implicit_tls or wrong_host) and tls is None:
            raise ValueError("implicit_tls and wrong_host need tls files")
        self.host = host
        self.tls = tls
        self.implicit_tls = implicit_tls
        self.wrong_host = wrong_host
        self.port = port or 0
        self.username = username
        self.password = password
        self._controller: Controller | None = None
        self._messages: list[ReceivedMessage] = []
        self._arrived = threading.Condition()
        self._failure: tuple[int, FailureStage] | None = None
        # With `oauth`, AUTH XOAUTH2 and OAUTHBEARER are offered too: a token signed with those
        # keys, unexpired, of the right issuer and audience and for `username` logs in.
        self.oauth = oauth
        self.bearer_failures: list[BearerFailure] = []

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> None:
        """Start listening; after a stop() this reuses the same port (SMTP "back up")."""
        if self._controller is not None:
            return
        started = time.monotonic()
        if not self.port:
            self.port = free_port(self.host)
        auth = self.username is not None
        if self.oauth is not None and not auth:
            raise ValueError("an OAuth2 SMTP server needs the username the tokens are for")
        tls_kwargs: dict[str, Any] = {}
        if self.tls is not None:
            context = self.tls.server_context(wrong_host=self.wrong_host)
            if self.implicit_tls:
                # The Controller wraps the listening socket: TLS from the first byte.
                tls_kwargs = {"ssl_context": context}
            else:
                tls_kwargs = {"tls_context": context, "require_starttls": False}
        controller = (_OAuthController if self.oauth is not None else Controller)(
            (_OAuthHandler if self.oauth is not None else _Handler)(self),
            hostname=self.host,
            port=self.port,
            server_hostname="smtp.mailhub.test",
            ready_timeout=10.0,
            authenticator=self._authenticate if auth else None,
            # AUTH without TLS is the point on loopback. AUTH is required by handle_MAIL rather
            # than auth_required=True, which warns about this on every connection.
            auth_require_tls=False,
            **tls_kwargs,
        )
        controller.start()
        self._controller = controller
        register_running(self)
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        """Stop listening (connections are refused) but keep the port and the recorded messages."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        unregister_running(self)

    # -- recording ---------------------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._arrived:
            return list(self._messages)

    def wait_for(self, count: int = 1, timeout: float = 10.0) -> list[ReceivedMessage]:
        """All messages once at least `count` arrived; AssertionError after `timeout`."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._messages) >= count, timeout):
                subjects = [m.message["Subject"] for m in self._messages]
                raise AssertionError(f"expected {count} message(s) within {timeout}s, got {subjects}")
            return list(self._messages)

    def clear(self) -> None:
        with self._arrived:
            self._messages.clear()

    def set_failure(self, code: int | None = 451, *, at: FailureStage = "rcpt") -> None:
        """Answer `code` (e.g. 451 temporary, 550 permanent) until `set_failure(None)`.

        at="rcpt": every RCPT TO and DATA is refused (smtplib: SMTPRecipientsRefused);
        at="data": recipients are accepted and the message is refused after DATA
        (smtplib: SMTPDataError).
        """
        self._failure = None if code is None else (code, at)

    def _failure_reply(self, stage: FailureStage) -> str | None:
        failure = self._failure
        if failure is None or (stage == "rcpt" and failure[1] == "data"):
            return None
        code = failure[0]
        kind = "4.3.0 Temporary failure" if 400 <= code < 500 else "5.7.1 Rejected"
        return f"{code} {kind} (test server failure mode)"

    def _record(self, message: ReceivedMessage) -> None:
        with self._arrived:
            self._messages.append(message)
            self._arrived.notify_all()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == self.username
            and auth_data.password.decode() == self.password
        ):
            return AuthResult(success=True, auth_data=auth_data)
        # handled=False lets aiosmtpd answer the standard "535 5.7.8 ... credentials invalid".
        return AuthResult(success=False, handled=False)


class _OAuthSMTP(SMTP):
    """RFC 4954 §4: an AUTH command line may be up to 12288 octets (an initial response carrying
    a JWT is longer than SMTP's usual 512); aiosmtpd's defaults would answer 500."""

    line_length_limit = 12288 + 2

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per instance: aiosmtpd's class attribute is shared by every server.
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit, AUTH=12288)


class _OAuthController(Controller):
    def factory(self) -> SMTP:
        return _OAuthSMTP(self.handler, **self.SMTP_kwargs)


class _Handler:
    def __init__(self, server: RecordingSmtpServer) -> None:
        self._server = server

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if self._server.username is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self._server._failure_reply("rcpt")
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = self._server._failure_reply("data")
        if reply is not None:
            return reply
        raw = envelope.original_content or b""
        auth_data = session.auth_data
        self._server._record(
            ReceivedMessage(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                raw=raw,
                message=BytesParser(policy=policy.default).parsebytes(raw.replace(b"\r\n", b"\n")),  # type: ignore[arg-type]
                auth_login=auth_data.login.decode()
                if isinstance(auth_data, LoginPassword | BearerLogin)
                else None,
                auth_mechanism=auth_data.mechanism if isinstance(auth_data, BearerLogin) else None,
            )
        )
        return "250 Message accepted for delivery"


class _OAuthHandler(_Handler):
    """AUTH XOAUTH2 and OAUTHBEARER (aiosmtpd finds handler methods named auth_<MECHANISM>)."""

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._bearer(server, args, "XOAUTH2")

    async def auth_OAUTHBEARER(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._bearer(server, args, "OAUTHBEARER")

    async def _bearer(self, server: SMTP, args: list[str], mechanism: str) -> AuthResult:
        recorder = self._server
        assert recorder.oauth is not None
        if len(args) == 1:  # no initial response: ask for it with an empty challenge
            blob = await server.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except (binascii.Error, ValueError):
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        login, token = _parse_bearer(mechanism, blob)
        if login is None or token is None:
            reason: str | None = "malformed SASL message"
        elif login != recorder.username:
            reason = "login of another user"
        else:
            reason = recorder.oauth.check(token, username=login)
        if reason is None:
            assert login is not None
            return AuthResult(success=True, auth_data=BearerLogin(login.encode(), mechanism))
        # The error challenge, then the client's one response, then the final reply (RFC 7628
        # §3.2.2-§3.2.3; Google's XOAUTH2 documentation).
        status = "invalid_token" if mechanism == "OAUTHBEARER" else "401"
        challenge = json.dumps({"status": status, "schemes": "bearer", "scope": "mail"})
        answer = await server.challenge_auth(challenge)
        recorder.bearer_failures.append(
            BearerFailure(mechanism, reason, None if answer is MISSING else bytes(answer))
        )
        if answer is MISSING:
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False)


def _parse_bearer(mechanism: str, blob: bytes) -> tuple[str | None, str | None]:
    """(login, token) of an XOAUTH2 or OAUTHBEARER initial response."""
    try:
        text = blob.decode()
    except UnicodeDecodeError:
        return None, None
    if not text.endswith("\x01\x01"):
        return None, None
    login = token = None
    fields = text[:-2].split("\x01")
    if mechanism == "OAUTHBEARER":
        gs2, fields = fields[0], fields[1:]
        # RFC 5801 §4: "n,a=<authzid>," with "=2C" for "," and "=3D" for "=".
        for part in gs2.split(","):
            if part.startswith("a="):
                login = part[2:].replace("=2C", ",").replace("=3D", "=")
    for field in fields:
        key, _, value = field.partition("=")
        if key == "user" and mechanism == "XOAUTH2":
            login = value
        elif key == "auth" and value.startswith("Bearer "):
            token = value[len("Bearer ") :]
    return login, token
