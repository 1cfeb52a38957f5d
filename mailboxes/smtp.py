"""The SMTP gateway: the only module that talks SMTP (smtplib). No ORM here.

`SmtpError.permanent` follows RFC 5321 §4.2.1: 5yz replies are permanent, 4yz transient; network
failures are transient; bad credentials are permanent.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: str  # "ssl" | "starttls" | "none"
    username: str = ""
    password: str = ""
    timeout: float = 30.0


class SmtpError(Exception):
    def __init__(self, message: str, *, permanent: bool, code: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code


def _translate(exc: BaseException, smtp: SmtpSettings) -> SmtpError:
    where = f"{smtp.host}:{smtp.port}"
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return SmtpError(
            f"SMTP login failed for {smtp.username!r} on {where}: {exc.smtp_code} {_text(exc.smtp_error)}",
            permanent=True,
            code=exc.smtp_code,
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
    if isinstance(exc, ssl.SSLError):
        return SmtpError(f"SMTP TLS error with {where}: {exc}", permanent=True)
    if isinstance(exc, ConnectionRefusedError):
        return SmtpError(f"SMTP connection to {where} refused", permanent=False)
    if isinstance(exc, TimeoutError):
        return SmtpError(f"SMTP connection to {where} timed out", permanent=False)
    return SmtpError(f"SMTP error with {where}: {exc}", permanent=False)


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@contextmanager
def smtp_session(smtp: SmtpSettings) -> Iterator[smtplib.SMTP]:
    context = ssl.create_default_context()
    try:
        if smtp.security == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                smtp.host, smtp.port, timeout=smtp.timeout, context=context
            )
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
        try:
            client.ehlo()
            if smtp.security == "starttls":
                client.starttls(context=context)
                client.ehlo()
            if smtp.username:
                client.login(smtp.username, smtp.password)
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


def smtp_send(smtp: SmtpSettings, message: EmailMessage) -> None:
    """Send one message; raises SmtpError telling whether a retry can help."""
    with smtp_session(smtp) as client:
        client.send_message(message)


def smtp_send_raw(smtp: SmtpSettings, *, sender: str, recipients: list[str], message: bytes) -> None:
    """Send an already rendered message byte for byte (what was stored is what goes out)."""
    with smtp_session(smtp) as client:
        refused = client.sendmail(sender, recipients, message)
    if refused:
        raise _translate(smtplib.SMTPRecipientsRefused(refused), smtp)
