"""Services of the mailboxes app: functions that change state or talk to the outside."""

from .connection import ConnectionCheck, mailbox_test_connection
from .polling import PollResult, mailbox_poll, mailboxes_claim_due_polls
from .storing import email_prepare_fetched, email_store_fetched, email_store_outgoing

__all__ = [
    "ConnectionCheck",
    "PollResult",
    "email_prepare_fetched",
    "email_store_fetched",
    "email_store_outgoing",
    "mailbox_poll",
    "mailbox_test_connection",
    "mailboxes_claim_due_polls",
]
