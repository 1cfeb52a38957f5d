"""Leads created from emails."""

from __future__ import annotations

import re

from mailboxes import limits
from mailboxes.models import Email, Mailbox
from processing.models import OPEN_LEAD_STATUSES, Lead


def readable_name(address: str) -> str:
    """'john.doe-smith@example.com' -> 'John Doe Smith' for senders without a display name."""
    local = address.split("@", 1)[0]
    words = [word for word in re.split(r"[._+\-]+", local) if word]
    return " ".join(word.capitalize() for word in words) or address or "Unknown sender"


def lead_create_or_join_from_email(*, email: Email, allow_join: bool) -> Lead:
    """The caller holds a lock on the mailbox row, so two emails of one sender can't race."""
    mailbox: Mailbox = email.mailbox
    if allow_join and email.from_address:
        open_lead = (
            Lead.objects.filter(
                mailbox=mailbox, email__iexact=email.from_address, status__in=OPEN_LEAD_STATUSES
            )
            .order_by("created_at", "pk")
            .first()
        )
        if open_lead is not None:
            return open_lead
    lead = Lead(
        name=email.from_name or readable_name(email.from_address),
        email=email.from_address,
        subject=email.subject,
        notes=email.text_body,
        mailbox=mailbox,
        owner=mailbox.default_owner,
        source_email=email,
    )
    # A readable name made of a 300-character local part must still fit varchar(255).
    limits.fit_row(lead)
    lead.save()
    return lead
