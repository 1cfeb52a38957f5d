"""Services of the mailboxes app: functions that change state or talk to the outside."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from ..encryption import SecretDecryptionError
from ..imap import ImapError, imap_check_connection
from ..models import Mailbox
from ..smtp import SmtpError, smtp_check_connection
from .oauth import mailbox_run_imap, mailbox_run_smtp

logger = logging.getLogger("mailhub.connection")


@dataclass(frozen=True)
class ConnectionCheck:
    protocol: str
    ok: bool
    message: str


def _check(protocol: str, run: Callable[[], str]) -> ConnectionCheck:
    try:
        return ConnectionCheck(protocol, True, run())
    except (ImapError, SmtpError, SecretDecryptionError) as exc:
        # These messages are written to name no secret (see the gateways' _translate).
        return ConnectionCheck(protocol, False, str(exc))
    except Exception as exc:  # noqa: BLE001 - the admin gets an answer, never a 500
        # A bug or an unforeseen library error: the admin gets an answer rather than a 500. Only
        # the exception's type and where it was raised, in the message and the log: its text
        # (and a traceback's) may quote what it choked on, a password say.
        where = traceback.extract_tb(exc.__traceback__)[-1]
        logger.error(
            "%s connection check failed on our side: %s at %s:%s",
            protocol,
            type(exc).__name__,
            where.filename,
            where.lineno,
        )
        return ConnectionCheck(protocol, False, f"{protocol} check failed on our side ({type(exc).__name__})")


def mailbox_test_connection(*, mailbox: Mailbox) -> list[ConnectionCheck]:
    """Log in to IMAP (and select the folder) and connect to SMTP; report each outcome exactly."""
    checks = [_check("IMAP", lambda: mailbox_run_imap(mailbox=mailbox, run=imap_check_connection))]
    if mailbox.smtp_host:
        checks.append(_check("SMTP", lambda: mailbox_run_smtp(mailbox=mailbox, run=smtp_check_connection)))
    else:
        checks.append(ConnectionCheck("SMTP", False, "SMTP is not configured (no host)."))
    return checks
