"""Services of the processing app: leads, cases, threading, and the per-mailbox action."""

from .actions import (
    ConversionRefused,
    ProcessingOutcome,
    ProcessingResult,
    email_convert_to_case,
    email_convert_to_lead,
    email_process,
    emails_needing_processing,
    emails_process_batch,
)

__all__ = [
    "ConversionRefused",
    "ProcessingOutcome",
    "ProcessingResult",
    "email_convert_to_case",
    "email_convert_to_lead",
    "email_process",
    "emails_needing_processing",
    "emails_process_batch",
]
