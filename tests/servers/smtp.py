"""An in-process SMTP server (aiosmtpd) that records what it receives.

It can require AUTH (LOGIN/PLAIN, allowed without TLS since it only listens on loopback), offer
STARTTLS or speak implicit TLS with the certificates of tls.py, answer temporary failures on
demand, and be stopped and restarted on the same port to simulate an SMTP outage.
"""

import logging
import threading
import time
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from .common import LOCALHOST, ManagedServer, free_port, register_running, unregister_running
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
        tls_kwargs: dict[str, Any] = {}
        if self.tls is not None:
            context = self.tls.server_context(wrong_host=self.wrong_host)
            if self.implicit_tls:
                # The Controller wraps the listening socket: TLS from the first byte.
                tls_kwargs = {"ssl_context": context}
            else:
                tls_kwargs = {"tls_context": context, "require_starttls": False}
        controller = Controller(
            _Handler(self),
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
                auth_login=auth_data.login.decode() if isinstance(auth_data, LoginPassword) else None,
            )
        )
        return "250 Message accepted for delivery"
