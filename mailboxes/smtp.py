"""The SMTP gateway: the only module that talks SMTP (smtplib). No ORM here.

`SmtpError.permanent` follows RFC 5321 §4.2.1: 5yz replies are permanent, 4yz transient; network
failures are transient; bad credentials and TLS misconfiguration are permanent.

`SmtpError.ambiguous` marks the one outcome nobody can know: the connection died or timed out
after the whole message and its final "." were sent, before the server's reply. The server may
have accepted (and will deliver) the message, so a retry could deliver a second copy (RFC 5321
§4.1.1.4 and §6.1: the reply to the final dot is what hands over responsibility). A failure at any
earlier point (connect, login, MAIL, RCPT, DATA, while sending the body) is not ambiguous: without
the final dot no server accepts a message.

Timeouts (RFC 5321 §4.5.3.2): `SmtpSettings.timeout` per command, the longer `data_timeout` only
for the reply to the final dot (§4.5.3.2.6: servers scan the message before answering). TLS modes
are `tls.Security`; certificates are always verified (see mailboxes/tls.py).
"""

from __future__ import annotations

import base64
import re
import smtplib
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.views.decorators.debug import sensitive_variables

from . import sasl
from .tls import NOT_TLS_REASONS, CaFileError, Security, certificate_problem, speaks_tls, verifying_context


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: Security
    username: str = ""
    password: str = field(default="", repr=False)  # never in a repr, a log line or a traceback
    timeout: float = 30.0
    ca_file: str = ""  # PEM CA bundle trusted in addition to the system CAs (MAILHUB_TLS_CA_FILE)
    data_timeout: float = 600.0  # wait for the reply to the final "." (RFC 5321 §4.5.3.2.6)
    # An OAuth2 access token for `username`: when set, the login is AUTH OAUTHBEARER / XOAUTH2
    # with it instead of the password (which must then be empty). Never in a repr, a log line or
    # a traceback, like the password.
    oauth2_token: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.oauth2_token and self.password:
            raise ValueError("SmtpSettings takes a password or an OAuth2 token, not both")
        if self.oauth2_token and not self.username:
            raise ValueError("an OAuth2 login needs the username the token was issued for")


class SmtpError(Exception):
    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        code: int | None = None,
        ambiguous: bool = False,
        auth_failed: bool = False,
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code
        #: The message may have been accepted: never retry automatically (see the module docstring).
        self.ambiguous = ambiguous
        #: The server refused the credentials (535, RFC 4954 §6). With an OAuth2 token, the caller
        #: may retry once with a freshly refreshed one before asking for a reconnection.
        self.auth_failed = auth_failed


def _ssl_context(smtp: SmtpSettings) -> ssl.SSLContext:
    try:
        return verifying_context(smtp.ca_file)
    except CaFileError as exc:
        raise SmtpError(f"SMTP {exc}", permanent=True) from exc


def _translate(exc: BaseException, smtp: SmtpSettings) -> SmtpError:
    where = f"{smtp.host}:{smtp.port}"
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        method = " with an OAuth2 token" if smtp.oauth2_token else ""
        if 400 <= exc.smtp_code < 500:
            # RFC 4954 §6: 454 4.7.0 "Temporary authentication failure" (the server could not
            # check the credentials now): transient, the credentials may be fine.
            return SmtpError(
                f"SMTP server {where} could not check the login{method} of {smtp.username!r} for now: "
                f"{exc.smtp_code} {_text(exc.smtp_error)}",
                permanent=False,
                code=exc.smtp_code,
            )
        return SmtpError(
            f"SMTP login{method} failed for {smtp.username!r} on {where}: {exc.smtp_code} "
            f"{_text(exc.smtp_error)}",
            permanent=True,
            code=exc.smtp_code,
            # 535 5.7.8 "Authentication credentials invalid" (RFC 4954 §6; Microsoft 365 and
            # Gmail answer 535 for a bad or expired token). 534 (mechanism too weak) or 538
            # (encryption required) are configuration problems a fresh token would not solve.
            auth_failed=exc.smtp_code == 535,
        )
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _msg in exc.recipients.values()]
        permanent = all(code >= 500 for code in codes)
        return SmtpError(
            f"SMTP server {where} refused the recipients: {exc.recipients}",
            permanent=permanent,
            code=codes[0] if codes else None,
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        return SmtpError(
            f"SMTP server {where} answered {exc.smtp_code} {_text(exc.smtp_error)}",
            permanent=exc.smtp_code >= 500,
            code=exc.smtp_code,
        )
    if isinstance(exc, socket.gaierror):
        return SmtpError(f"SMTP host {smtp.host!r} not found (DNS): {exc}", permanent=False)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return SmtpError(
            f"SMTP TLS certificate of {where} rejected: {certificate_problem(exc, smtp.ca_file)}",
            permanent=True,
        )
    if isinstance(exc, ssl.SSLError) and smtp.security == Security.SSL and exc.reason in NOT_TLS_REASONS:
        return SmtpError(
            f"SMTP server {where} did not answer in TLS: security setting mismatch? 'ssl' is "
            f"implicit TLS (usually port 465); a plain port (usually 587 or 25) needs 'starttls' ({exc})",
            permanent=True,
        )
    if isinstance(exc, ssl.SSLError):
        return SmtpError(f"SMTP TLS error with {where}: {exc}", permanent=True)
    if isinstance(exc, ConnectionRefusedError):
        return SmtpError(f"SMTP connection to {where} refused", permanent=False)
    if isinstance(exc, TimeoutError):
        return SmtpError(f"SMTP connection to {where} timed out", permanent=False)
    return SmtpError(f"SMTP error with {where}: {exc}", permanent=False)


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _connect(smtp: SmtpSettings, context: ssl.SSLContext | None) -> smtplib.SMTP:
    if smtp.security == Security.SSL:
        return smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout, context=context)
    try:
        return smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
    except smtplib.SMTPServerDisconnected as exc:
        # smtplib reports a greeting timeout as a disconnection caused by a TimeoutError.
        if isinstance(exc.__context__, TimeoutError) and speaks_tls(
            smtp.host, smtp.port, min(smtp.timeout, 5.0)
        ):
            raise SmtpError(
                f"SMTP server {smtp.host}:{smtp.port} expects TLS from the first byte (no plain-text "
                "greeting): security setting mismatch? This port needs 'ssl' (implicit TLS)",
                permanent=True,
            ) from exc
        raise


# Every frame below this one (smtplib's) is shown without its variables in Django's error report:
# they hold the password or its base64 form.
@sensitive_variables()
def _login(client: smtplib.SMTP, smtp: SmtpSettings) -> None:
    """AUTH PLAIN in UTF-8 when offered, else smtplib's login (ASCII only).

    smtplib encodes every AUTH response as ASCII, so a non-ASCII password raised an encoding
    error naming one of its characters. SASL PLAIN (RFC 4616 §2) is UTF-8; it is sent as the
    initial response of AUTH (RFC 4954 §4), which every server offering PLAIN accepts.
    """
    mechanisms = client.esmtp_features.get("auth", "").upper().split()
    if smtp.oauth2_token:
        _login_oauth2(client, smtp, mechanisms)
        return
    if "PLAIN" in mechanisms:
        message = b"\0" + smtp.username.encode() + b"\0" + smtp.password.encode()
        code, reply = client.docmd("AUTH", "PLAIN " + base64.b64encode(message).decode("ascii"))
        # 235: authenticated; 503: already authenticated (as smtplib's own login accepts).
        if code not in (235, 503):
            raise smtplib.SMTPAuthenticationError(code, reply)
        return
    if not (smtp.username.isascii() and smtp.password.isascii()):
        raise SmtpError(
            f"SMTP server {smtp.host}:{smtp.port} does not offer AUTH PLAIN, which a username or "
            "password with non-ASCII characters needs (the password was not sent)",
            permanent=True,
        )
    client.login(smtp.username, smtp.password)


@sensitive_variables()
def _login_oauth2(client: smtplib.SMTP, smtp: SmtpSettings, mechanisms: list[str]) -> None:
    """AUTH OAUTHBEARER (RFC 7628) when offered, else AUTH XOAUTH2 (Microsoft 365 offers only
    this one), the credential as the initial response (RFC 4954 §4).

    On a refused token the server answers 334 with an error challenge (base64 JSON) and waits for
    one more response before its final 5xx: the empty line for XOAUTH2, %x01 for OAUTHBEARER
    (RFC 7628 §3.2.3), never the credential again (see sasl.py).
    """
    where = f"{smtp.host}:{smtp.port}"
    problem = sasl.bearer_token_problem(smtp.oauth2_token) or sasl.username_problem(smtp.username)
    if problem:
        raise SmtpError(f"SMTP login to {where} not attempted: {problem} (nothing was sent)", permanent=True)
    mechanism: sasl.Mechanism
    if "OAUTHBEARER" in mechanisms:
        mechanism = "OAUTHBEARER"
    elif "XOAUTH2" in mechanisms:
        mechanism = "XOAUTH2"
    else:
        raise SmtpError(
            f"SMTP server {where} offers neither AUTH OAUTHBEARER nor XOAUTH2, which an OAuth2 "
            "login needs (the token was not sent)",
            permanent=True,
        )
    credential = sasl.initial_response(mechanism, smtp.username, smtp.oauth2_token)
    code, reply = client.docmd("AUTH", f"{mechanism} {base64.b64encode(credential).decode('ascii')}")
    status = ""
    if code == 334:
        status = sasl.error_status(reply)
        answer = sasl.ERROR_CHALLENGE_ANSWER[mechanism]
        code, reply = client.docmd(base64.b64encode(answer).decode("ascii"))
    # 235: authenticated; 503: already authenticated (as smtplib's own login accepts).
    if code not in (235, 503):
        text = _text(reply) + (f" (OAuth2 status {status!r})" if status else "")
        raise smtplib.SMTPAuthenticationError(code, text)


@contextmanager
def smtp_session(smtp: SmtpSettings) -> Iterator[smtplib.SMTP]:
    context = _ssl_context(smtp) if smtp.security in (Security.SSL, Security.STARTTLS) else None
    try:
        client = _connect(smtp, context)
        try:
            client.ehlo()
            if smtp.security == Security.STARTTLS:
                if not client.has_extn("starttls"):
                    raise SmtpError(
                        f"SMTP server {smtp.host}:{smtp.port} does not offer STARTTLS (the password "
                        "was not sent): use 'ssl' with its implicit-TLS port (usually 465) if it has one",
                        permanent=True,
                    )
                client.starttls(context=context)
                client.ehlo()
            if smtp.username:
                try:
                    _login(client, smtp)
                except (SmtpError, smtplib.SMTPException, OSError):
                    raise
                except Exception as exc:
                    # Its text may quote the credentials (an encoder names the character it
                    # choked on): only its type is reported.
                    raise SmtpError(
                        f"SMTP login to {smtp.host}:{smtp.port} failed on our side ({type(exc).__name__})",
                        permanent=False,
                    ) from exc
            yield client
        finally:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()
    except (smtplib.SMTPException, OSError) as exc:
        raise _translate(exc, smtp) from exc


def smtp_check_connection(smtp: SmtpSettings) -> str:
    with smtp_session(smtp) as client:
        code, _message = client.noop()
    login = f" as {smtp.username!r}" if smtp.username else " (no login)"
    return f"SMTP OK: connected to {smtp.host}:{smtp.port}{login}, NOOP answered {code}."


# RFC 5321 §4.5.2 transparency: a line starting with "." gets one more.
_LEADING_DOT = re.compile(rb"(?m)^\.")


def smtp_send_raw(
    smtp: SmtpSettings, *, sender: str, recipients: list[str], message: bytes
) -> dict[str, tuple[int, str]]:
    """Send an already rendered message byte for byte (what was stored is what goes out).

    The transaction is spelled out (MAIL, RCPT, DATA) rather than `sendmail()` so that a failure
    after the final dot is told apart from one before it (`SmtpError.ambiguous`), and so that
    only the wait for the final reply gets the long DATA-termination timeout.

    Returns the recipients the server refused while it accepted the message for the others
    (RFC 5321 §3.3: each RCPT is answered on its own). That is not an error to retry: the
    message is delivered to the accepted ones, and a retry would give them a second copy. All
    refused raises before DATA.
    """
    with smtp_session(smtp) as client:
        code, reply = client.mail(sender)
        if code != 250:
            raise _translate(smtplib.SMTPSenderRefused(code, reply, sender), smtp)
        refused = {}
        for recipient in recipients:
            code, reply = client.rcpt(recipient)
            if code not in (250, 251):
                refused[recipient] = (code, reply)
        if len(refused) == len(recipients):
            client.rset()
            raise _translate(smtplib.SMTPRecipientsRefused(refused), smtp)
        code, reply = client.docmd("DATA")
        if code != 354:
            raise _translate(smtplib.SMTPDataError(code, reply), smtp)
        body = _LEADING_DOT.sub(b"..", message)
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        client.send(body + b".\r\n")  # a failure up to here: the server did not get the final dot
        _await_final_reply(client, smtp)
    return {recipient: (code, _text(reply)) for recipient, (code, reply) in refused.items()}


def _await_final_reply(client: smtplib.SMTP, smtp: SmtpSettings) -> None:
    where = f"{smtp.host}:{smtp.port}"
    try:
        if client.sock is not None:
            client.sock.settimeout(smtp.data_timeout)
        code, reply = client.getreply()
    except (smtplib.SMTPServerDisconnected, OSError) as exc:
        client.close()  # a dead connection: do not wait again for the QUIT reply
        raise SmtpError(
            f"SMTP server {where} sent no reply after the whole message was sent ({type(exc).__name__}, "
            f"waited up to {smtp.data_timeout:g} s): it may or may not have accepted the message",
            permanent=False,
            ambiguous=True,
        ) from exc
    if client.sock is not None:
        client.sock.settimeout(smtp.timeout)
    if code != 250:
        raise _translate(smtplib.SMTPDataError(code, reply), smtp)
