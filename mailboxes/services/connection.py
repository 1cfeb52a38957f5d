"""Services of the mailboxes app: functions that change state or talk to the outside."""

from __future__ import annotations

from dataclasses import dataclass

from ..imap import ImapError, imap_check_connection
from ..models import Mailbox
from ..smtp import SmtpError, smtp_check_connection


@dataclass(frozen=True)
class ConnectionCheck:
    protocol: str
    ok: bool
    message: str


def mailbox_test_connection(*, mailbox: Mailbox) -> list[ConnectionCheck]:
    """Log in to IMAP (and select the folder) and connect to SMTP; report each outcome exactly."""
    checks = []
    try:
        checks.append(ConnectionCheck("IMAP", True, imap_check_connection(mailbox.imap_settings())))
    except ImapError as exc:
        checks.append(ConnectionCheck("IMAP", False, str(exc)))
    if mailbox.smtp_host:
        try:
            checks.append(ConnectionCheck("SMTP", True, smtp_check_connection(mailbox.smtp_settings())))
        except SmtpError as exc:
            checks.append(ConnectionCheck("SMTP", False, str(exc)))
    else:
        checks.append(ConnectionCheck("SMTP", False, "SMTP is not configured (no host)."))
    return checks
