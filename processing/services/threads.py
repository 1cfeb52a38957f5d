"""Which case does an incoming email answer? Read-only: the caller decides what to do with it.

Replies are recognised, in this order, by RFC 5322 §3.6.4 headers (In-Reply-To, then References,
newest first) naming an email of a case in the same mailbox, and by the case token `[#1042]` in
the subject, which survives mail clients that drop those headers — the token only from a sender
who is already on the case, since case numbers can be guessed.
"""

from __future__ import annotations

import re

from autoresponse.selectors import auto_replies_cases_by_message_id
from mailboxes.models import Email, EmailDirection
from processing.models import Case

CASE_TOKEN = re.compile(r"\[#(\d{1,9})\]")


def referenced_message_ids(email: Email) -> list[str]:
    """In-Reply-To first, then References from the newest (last) to the oldest."""
    ids = [email.in_reply_to] if email.in_reply_to else []
    ids += [ref for ref in reversed(email.references.split()) if ref not in ids]
    return ids


def case_find_for_reply(*, email: Email) -> Case | None:
    ids = referenced_message_ids(email)
    if ids:
        candidates = (
            Email.objects.filter(mailbox_id=email.mailbox_id, message_id__in=ids, case__isnull=False)
            .exclude(pk=email.pk)
            .values_list("message_id", "case_id")
        )
        case_by_message = dict(candidates)
        # Messages we sent (auto-replies) also thread: a reply to them joins their case.
        for message_id, case_id in auto_replies_cases_by_message_id(
            mailbox_id=email.mailbox_id, message_ids=ids
        ):
            case_by_message.setdefault(message_id, case_id)
        for message_id in ids:
            if message_id in case_by_message:
                return Case.objects.get(pk=case_by_message[message_id])
    match = CASE_TOKEN.search(email.subject or "")
    if match:
        case = Case.objects.filter(mailbox_id=email.mailbox_id, number=int(match.group(1))).first()
        if case is not None and _sender_is_on_the_case(email, case):
            return case
    return None


def _sender_is_on_the_case(email: Email, case: Case) -> bool:
    """Case numbers are short and sequential: anybody can guess `[#1042]`. The token alone only
    threads mail from the reporter or from someone who already wrote into the case; a stranger's
    email opens its own case instead of landing in (or reopening) somebody else's.

    Only mail received counts as having written into the case: our own answers are on the case
    too, From the mailbox's address, and anybody can write that address in a From header."""
    sender = (email.from_address or "").lower()
    if not sender:
        return False
    if sender == case.reporter_address.lower():
        return True
    return (
        case.emails.filter(direction=EmailDirection.INCOMING, from_address__iexact=sender)
        .exclude(pk=email.pk)
        .exists()
    )
