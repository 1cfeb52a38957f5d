"""Auto-responses: decide (in the processing transaction), then send once (after the commit).

Deciding creates one AutoReply row per (email, matching rule) — unique in the database — either
`pending` with the fully rendered message, or `suppressed` with the reason. Sending claims a
pending row with a conditional UPDATE (pending -> sending), so a rerun, a retry or a second worker
can never send a second copy. When nobody can know whether the server accepted the message (the
connection died after the final dot, or a worker died between the SMTP transaction and marking
the row `sent`, leaving it `sending`), the row becomes `uncertain`: never retried automatically,
an admin resends it by hand (`auto_replies_resend_by_hand`). A missing auto-reply is better than
a duplicate one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, formataddr, make_msgid
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Concat
from django.utils import timezone

from mailboxes import limits
from mailboxes.encryption import SecretDecryptionError
from mailboxes.models import Email, Mailbox
from mailboxes.services.sending import (
    SendResult,
    smtp_send_claimed,
    stale_sending_after,
)

from .conditions import ConditionSpec, EmailFacts, rule_matches
from .loops import LoopCheckInput, address_key, answered_address, suppression_reason
from .models import AutoReply, AutoReplyStatus, AutoResponseRule
from .rendering import TemplateProblem, header_value_safe, template_render
from .safe_regex import RegexBudget

logger = logging.getLogger("mailhub.autoresponse")


def email_facts(email: Email) -> EmailFacts:
    return EmailFacts(
        subject=email.subject,
        text_body=email.text_body,
        sender_address=email.from_address,
        sender_name=email.from_name,
        to=[tuple(pair) for pair in email.to],
        cc=[tuple(pair) for pair in email.cc],
        headers=[tuple(pair) for pair in email.headers],
    )


def template_context(email: Email) -> dict[str, Any]:
    """Plain values only: the sandboxed template never sees an ORM object."""
    case = email.case
    lead = email.lead
    return {
        "email": {
            "subject": email.subject,
            "sender_name": email.from_name,
            "sender_address": email.from_address,
            "date": email.date,
            "text": email.text_body,
        },
        "mailbox": {"label": email.mailbox.label, "address": email.mailbox.email},
        "case": (
            {
                "number": case.number,
                "reference": case.reference,
                "subject": case.subject,
                "status": case.status,
            }
            if case
            else None
        ),
        "lead": {"name": lead.name, "status": lead.status} if lead else None,
    }


def _own_addresses() -> frozenset[str]:
    return frozenset(address.lower() for address in Mailbox.objects.values_list("email", flat=True))


# Rows that went out or may still go out (or may have: an uncertain outcome) count against the
# limits; suppressed and failed ones never reached anybody.
_COUNTED_STATUSES = (
    AutoReplyStatus.PENDING,
    AutoReplyStatus.SENDING,
    AutoReplyStatus.SENT,
    AutoReplyStatus.UNCERTAIN,
)


def _rate_limited(mailbox: Mailbox, key: str) -> bool:
    """Whether the answered address (its `address_key`) already got an auto-reply in the window.

    Keyed on what is answered, not on From: rotating From addresses with one Reply-To victim
    would otherwise get one reply each.
    """
    since = timezone.now() - timedelta(hours=mailbox.auto_reply_window_hours)
    return AutoReply.objects.filter(
        recipient_key=key,
        email__mailbox=mailbox,
        status__in=_COUNTED_STATUSES,
        created_at__gte=since,
    ).exists()


def _hourly_cap_reached(mailbox: Mailbox) -> bool:
    """Whether this mailbox already sent (or is sending) its cap of auto-replies in the last hour.

    Race-free because decisions run in the processing transaction that holds the mailbox row
    (`select_for_update` in processing): no other decision of this mailbox counts in between.
    """
    cap = mailbox.auto_reply_hourly_cap
    if cap == 0:
        return True
    since = timezone.now() - timedelta(hours=1)
    recent = AutoReply.objects.filter(
        email__mailbox=mailbox, status__in=_COUNTED_STATUSES, created_at__gte=since
    )
    return recent[:cap].count() >= cap


@dataclass(frozen=True)
class AutoReplyPlanning:
    """What deciding needs besides the email: a mailbox's active rules (with their templates and
    conditions) and every mailbox's own address. Loaded once for a batch of emails of one mailbox,
    inside the transaction that decides them."""

    rules: tuple[AutoResponseRule, ...]
    own_addresses: frozenset[str]


def auto_reply_planning_load(*, mailbox_id: int) -> AutoReplyPlanning:
    rules = tuple(
        AutoResponseRule.objects.filter(mailbox_id=mailbox_id, is_active=True)
        .select_related("template")
        .prefetch_related("conditions")
        .order_by("order", "pk")
    )
    # Without a rule nothing is decided: the addresses are not needed.
    return AutoReplyPlanning(rules=rules, own_addresses=_own_addresses() if rules else frozenset())


def auto_replies_plan_for_email(
    *, email: Email, joined_existing: bool, planning: AutoReplyPlanning | None = None
) -> list[int]:
    """Decide the auto-replies of one processed email; return the ids of those to send.

    Runs inside the processing transaction, which holds the mailbox row: the rate limit check and
    the new row can't race with another email of the same sender. `planning`: the mailbox's
    rules and the own addresses, loaded once for a batch (loaded here when not given).
    """
    if email.is_history:
        return []
    if planning is None:
        planning = auto_reply_planning_load(mailbox_id=email.mailbox_id)
    rules = planning.rules
    if not rules:
        return []
    facts = email_facts(email)
    # One parse of Reply-To (the MIME parser's), one answered address: the loop check below tests
    # exactly the address the reply goes to.
    recipient = answered_address(
        reply_to=[tuple(pair) for pair in email.reply_to], sender_address=email.from_address
    )
    loop_reason = suppression_reason(
        LoopCheckInput(
            headers=list(facts.headers),
            sender_address=email.from_address,
            own_addresses=planning.own_addresses,
            answered=recipient,
        )
    )
    to_send = []
    # One regex time budget for all conditions of all rules of this email.
    budget = RegexBudget()
    for rule in rules:
        if joined_existing and not rule.answer_replies:
            continue
        specs = [
            ConditionSpec(field=c.field, operator=c.operator, value=c.value, header_name=c.header_name)
            for c in rule.conditions.all()
        ]
        timeouts_before = budget.timeouts
        if not rule_matches(specs, rule.match, facts, budget):
            if budget.timeouts > timeouts_before:
                # Not answering is the safe side; the admin sees why this rule did not answer.
                _decide(email, rule, recipient, "condition timed out: a regular expression took too long")
            continue
        reply = _decide(email, rule, recipient, loop_reason)
        if reply is not None and reply.status == AutoReplyStatus.PENDING:
            to_send.append(reply.pk)
        if rule.stop_after_match:
            break
    return to_send


def _decide(
    email: Email, rule: AutoResponseRule, recipient: str, loop_reason: str | None
) -> AutoReply | None:
    key = address_key(recipient) if recipient else ""
    reply = AutoReply(email=email, rule=rule, rule_name=rule.name, recipient=recipient, recipient_key=key)
    mailbox = email.mailbox
    if loop_reason:
        reply.status, reply.reason = AutoReplyStatus.SUPPRESSED, loop_reason
    elif not recipient:
        reply.status, reply.reason = AutoReplyStatus.SUPPRESSED, "no valid address to answer to"
    elif _rate_limited(mailbox, key):
        reply.status = AutoReplyStatus.SUPPRESSED
        reply.reason = (
            f"rate limit: {recipient} already got an auto-response from this mailbox within "
            f"{mailbox.auto_reply_window_hours} h"
        )
    elif _hourly_cap_reached(mailbox):
        reply.status = AutoReplyStatus.SUPPRESSED
        reply.reason = f"hourly cap of {mailbox.auto_reply_hourly_cap} auto-replies reached for this mailbox"
    else:
        try:
            message = compose_auto_reply(email=email, rule=rule, recipient=recipient)
        except TemplateProblem as exc:
            reply.status, reply.reason = AutoReplyStatus.FAILED, f"template {rule.template.name!r}: {exc}"
        else:
            reply.status = AutoReplyStatus.PENDING
            reply.message_id = message["Message-ID"]
            reply.subject = message["Subject"]
            # CRLF line ends and 7-bit content (RFC 5322 §2.3): the stored text is sent as is.
            reply.rendered_message = message.as_string(policy=SMTP_POLICY)
    limits.fit_row(reply)  # the recipient and subject come from the email
    try:
        with transaction.atomic():
            reply.save()
    except IntegrityError:
        return None  # this (email, rule) was decided already: never a second decision
    return reply


def compose_auto_reply(*, email: Email, rule: AutoResponseRule, recipient: str) -> EmailMessage:
    mailbox = email.mailbox
    context = template_context(email)
    template = rule.template
    subject = header_value_safe(template_render(template.subject, context, html=False))
    text = template_render(template.text_body, context, html=False)
    html = template_render(template.html_body, context, html=True) if template.html_body.strip() else ""

    message = EmailMessage()
    message["From"] = formataddr((header_value_safe(mailbox.label), mailbox.email))
    message["To"] = recipient
    message["Subject"] = subject or "Re: " + header_value_safe(email.subject)
    message["Date"] = format_datetime(timezone.now())
    message["Message-ID"] = make_msgid(domain=mailbox.email.rpartition("@")[2] or "mailhub.invalid")
    if email.message_id:
        message["In-Reply-To"] = header_value_safe(email.message_id)
        references = [ref for ref in email.references.split() if ref] + [email.message_id]
        message["References"] = header_value_safe(" ".join(references[-20:]))
    # RFC 3834 §5: mark the message as an automatic reply; Microsoft servers honour the other.
    message["Auto-Submitted"] = "auto-replied"
    message["X-Auto-Response-Suppress"] = "All"
    # Quoted-printable keeps the message 7-bit: no SMTP server refuses it for lack of 8BITMIME.
    message.set_content(text, cte="quoted-printable")
    if html:
        message.add_alternative(html, subtype="html", cte="quoted-printable")
    return message


def auto_reply_send(*, auto_reply_id: int) -> AutoReply:
    """Send one pending auto-reply at most once. Transient SMTP errors leave it pending with a
    backoff time; permanent ones (5xx, bad login, undecryptable secret) fail it with the reason;
    an unknown outcome makes it `uncertain`. It never stays `sending` after this returns."""
    now = timezone.now()
    claimed = (
        AutoReply.objects.filter(pk=auto_reply_id, status=AutoReplyStatus.PENDING)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .update(status=AutoReplyStatus.SENDING, claimed_at=now, attempts=F("attempts") + 1)
    )
    reply = AutoReply.objects.select_related("email").get(pk=auto_reply_id)
    if not claimed:
        return reply
    try:
        # Loaded here, not joined above: a mailbox whose secret can't be decrypted fails only its
        # own sends, recorded on this row.
        mailbox = Mailbox.objects.get(pk=reply.email.mailbox_id)
        mailbox.smtp_settings()  # an undecryptable password fails here, recorded on this row
    except SecretDecryptionError as exc:
        return _finish(reply, AutoReplyStatus.FAILED, f"SMTP password of the mailbox unusable: {exc}")
    outcome = smtp_send_claimed(
        mailbox=mailbox,
        recipients=[reply.recipient],
        message=reply.rendered_message.encode("utf-8"),
        attempts=reply.attempts,
        label=f"auto-reply {reply.pk}",
    )
    if outcome.result != SendResult.SENT:
        return _finish(
            reply,
            AutoReplyStatus(outcome.result.value),
            outcome.reason,
            next_attempt_at=outcome.next_attempt_at,
        )
    reply.status, reply.sent_at, reply.reason = AutoReplyStatus.SENT, timezone.now(), ""
    reply.save(update_fields=["status", "sent_at", "reason"])
    return reply


def _finish(
    reply: AutoReply, status: AutoReplyStatus, reason: str, *, next_attempt_at: datetime | None = None
) -> AutoReply:
    reply.status, reply.reason, reply.next_attempt_at = status, reason, next_attempt_at
    reply.save(update_fields=["status", "reason", "next_attempt_at"])
    logger.warning("auto-reply %s not sent (%s): %s", reply.pk, status, reason)
    return reply


# Rows a person may send again: they did not go out, or nobody knows; a template failure has no
# message to send.
RESENDABLE_STATUSES = (AutoReplyStatus.UNCERTAIN, AutoReplyStatus.FAILED)


def auto_replies_resend_by_hand(*, auto_reply_ids: list[int], requested_by: str) -> list[int]:
    """Put uncertain or failed auto-replies back to pending (an admin checked they did not arrive).

    A conditional UPDATE, so a double click or two admins move each row once. Returns the ids
    moved; the caller enqueues them (the next poll would pick them up too).
    """
    resendable = AutoReply.objects.filter(pk__in=auto_reply_ids, status__in=RESENDABLE_STATUSES).exclude(
        rendered_message=""
    )
    ids = list(resendable.values_list("pk", flat=True))
    AutoReply.objects.filter(pk__in=ids, status__in=RESENDABLE_STATUSES).update(
        status=AutoReplyStatus.PENDING,
        next_attempt_at=None,
        attempts=0,
        reason=Concat(Value(f"resend requested by hand by {requested_by}; before: "), F("reason")),
    )
    return ids


def auto_replies_mark_stale_sending(*, mailbox_id: int) -> int:
    """Rows left 'sending' longer than `stale_sending_after()` belong to a worker that died mid-send:
    they become 'uncertain', never resent (the message may be out). Returns how many."""
    stale = AutoReply.objects.filter(
        email__mailbox_id=mailbox_id,
        status=AutoReplyStatus.SENDING,
        claimed_at__lt=timezone.now() - stale_sending_after(),
    )
    return stale.update(
        status=AutoReplyStatus.UNCERTAIN,
        reason="interrupted while sending (outcome unknown); not retried so that no second copy can "
        "go out, resend by hand if it did not arrive",
    )
