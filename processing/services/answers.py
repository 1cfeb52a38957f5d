"""Staff answer an email as its mailbox: the prefilled form, signatures, canned responses, and
the submit that stores the outgoing email and its OutboundMessage in one transaction.

Access (may this user see the email's mailbox?) is the caller's check, through the one rule of
the staff pages; everything else is checked again here, whatever the form sent: recipients,
limits, attachments of the original only. Sending is not done here: the caller dispatches
`OutboundMessage` ids after the commit (processing may not import the task layer), and the send
itself is `mailboxes.services.sending.outbound_send`, at most once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from datetime import timedelta
from email.utils import make_msgid
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from autoresponse.models import EmailTemplate
from autoresponse.rendering import TemplateProblem, template_render
from autoresponse.services import template_context
from mailboxes.models import Attachment, Email, Mailbox, OutboundMessage, SentCopyStatus
from mailboxes.services.storing import email_store_outgoing
from processing.answer_drafts import (
    AnswerDraft,
    AnswerMode,
    Original,
    OutgoingAttachment,
    Pair,
    RecipientsInvalid,
    answer_message_build,
    answer_recipients,
    answer_subject,
    forward_html,
    forward_text,
    one_line,
    quote_html,
    quote_text,
    recipients_parse,
    text_as_html,
    thread_headers,
)
from processing.models import AgentSignature, Case, CaseStatus
from processing.services.cases import case_update

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger("mailhub.answers")

#: Recipients of one answer, To + Cc + Bcc together.
MAX_RECIPIENTS = 100
#: Characters of what the agent writes (the quote comes on top, bounded by answer_drafts).
MAX_BODY_CHARS = 200_000
#: Files one answer may carry (forwarded + uploaded).
MAX_ATTACHMENTS = 50


class AnswerRefused(Exception):
    """An answer that is not sent; the message is for the agent."""


# -- reading the original ---------------------------------------------------------------------------


def answer_original(email: Email) -> Original:
    """The email answered as the plain values of answer_drafts (its date in the local zone)."""
    return Original(
        subject=email.subject,
        from_name=email.from_name,
        from_address=email.from_address,
        reply_to=[tuple(pair) for pair in email.reply_to],
        to=[tuple(pair) for pair in email.to],
        cc=[tuple(pair) for pair in email.cc],
        date=timezone.localtime(email.date) if email.date else None,
        message_id=email.message_id,
        references=email.references.split(),
        text_body=email.text_body,
        html_body=email.html_body,
    )


def own_addresses() -> list[str]:
    """Every mailbox of this installation: an answer never goes to one of them (a loop)."""
    return list(Mailbox.objects.values_list("email", flat=True))


def _case_reference(email: Email) -> str:
    return email.case.reference if email.case_id and email.case else ""


def answer_quote(*, email: Email, mode: AnswerMode) -> str:
    """The plain-text quote (reply) or forwarded block (forward) an answer carries when the
    agent keeps "include the original" ticked; shown under the form."""
    original = answer_original(email)
    return forward_text(original) if mode == AnswerMode.FORWARD else quote_text(original)


# -- signatures and canned responses ----------------------------------------------------------------


def signature_for(*, user: User, mailbox: Mailbox) -> str:
    """The agent's signature for this mailbox, else the agent's one for all mailboxes, else the
    mailbox's."""
    own = {
        signature.mailbox_id: signature.text
        for signature in AgentSignature.objects.filter(user=user).filter(
            Q(mailbox=mailbox) | Q(mailbox__isnull=True)
        )
    }
    for key in (mailbox.pk, None):
        if own.get(key, "").strip():
            return own[key]
    return mailbox.signature


def answer_prefill(*, email: Email, mode: AnswerMode, user: User) -> AnswerDraft:
    """The compose form of a reply, reply all or forward of `email`, before the agent edits it."""
    original = answer_original(email)
    to, cc = answer_recipients(mode=mode, original=original, own_addresses=own_addresses())
    signature = signature_for(user=user, mailbox=email.mailbox)
    return AnswerDraft(
        mode=mode,
        to=to,
        cc=cc,
        subject=answer_subject(mode=mode, subject=email.subject, case_reference=_case_reference(email)),
        body="\n\n-- \n" + signature if signature.strip() else "",
        attachment_ids=(
            list(email.attachments.order_by("pk").values_list("pk", flat=True))
            if mode == AnswerMode.FORWARD
            else []
        ),
    )


def _agent(user: User) -> dict[str, Any]:
    return {
        "name": user.get_full_name() or user.get_username(),
        "first_name": user.first_name or user.get_username(),
        "email": user.email,
    }


def canned_response_render(*, template_id: int, email: Email, user: User) -> str:
    """A template of the auto-responses (same sandbox, same variables as an auto-reply to this
    email gets) plus ``agent`` (name, first_name, email), rendered as plain text for the form."""
    template = EmailTemplate.objects.filter(pk=template_id).first()
    if template is None:
        raise AnswerRefused("That canned response does not exist (any more).")
    context = {**template_context(email), "agent": _agent(user)}
    try:
        return template_render(template.text_body, context, html=False, extra_variables=("agent",))
    except TemplateProblem as problem:
        raise AnswerRefused(f"The canned response “{template.name}” can't be used here: {problem}") from None


# -- submitting --------------------------------------------------------------------------------------


def _recipients(to: str, cc: str, bcc: str) -> tuple[list[Pair], list[Pair], list[Pair], list[str]]:
    try:
        parsed = [
            recipients_parse(value, field_name=name) for name, value in (("To", to), ("Cc", cc), ("Bcc", bcc))
        ]
    except RecipientsInvalid as invalid:
        raise AnswerRefused(str(invalid)) from None
    envelope: list[str] = []
    seen: set[str] = set()
    for pairs in parsed:
        for _name, address in pairs:
            if address.lower() not in seen:
                seen.add(address.lower())
                envelope.append(address)
    if not envelope:
        raise AnswerRefused("Nobody to send it to: fill in To, Cc or Bcc.")
    if len(envelope) > MAX_RECIPIENTS:
        raise AnswerRefused(f"Too many recipients ({len(envelope)}): at most {MAX_RECIPIENTS} per answer.")
    return parsed[0], parsed[1], parsed[2], envelope


def _rate_limit(user: User) -> None:
    """At most MAILHUB_ANSWERS_PER_USER_PER_HOUR answers per user and hour. Counted with the
    user's row locked (select_for_update) in the submit's transaction: two submits at once can't
    both see the last free slot. On SQLite, writes are serialized by the database anyway."""
    limit = settings.MAILHUB_ANSWERS_PER_USER_PER_HOUR
    get_user_model().objects.select_for_update().filter(pk=user.pk).first()
    since = timezone.now() - timedelta(hours=1)
    recent = OutboundMessage.objects.filter(sent_by=user, created_at__gte=since)
    if recent[:limit].count() >= limit:
        raise AnswerRefused(f"You sent {limit} answers in the last hour, the most allowed; try again later.")


def _attachments(
    *, email: Email, forward_attachment_ids: Sequence[int], uploads: Sequence[UploadedFile[bytes]]
) -> list[OutgoingAttachment]:
    wanted = set(forward_attachment_ids)
    forwarded = list(Attachment.objects.filter(email_id=email.pk, pk__in=wanted).order_by("pk"))
    if len(forwarded) != len(wanted):
        # Only the original's own files may be forwarded: an id of another email (maybe of a
        # mailbox this user can't see) is refused, never looked up elsewhere.
        raise AnswerRefused("An attachment to forward is not one of this email's.")
    if len(forwarded) + len(uploads) > MAX_ATTACHMENTS:
        raise AnswerRefused(f"Too many attachments: at most {MAX_ATTACHMENTS}.")
    limit = settings.MAILHUB_ANSWER_MAX_BYTES
    # Sizes first (known before any file is read): nothing over the limit is read into memory.
    total = sum(item.size for item in forwarded) + sum(upload.size or 0 for upload in uploads)
    if total > limit:
        raise AnswerRefused(
            f"The attachments are too large ({total:,} bytes): at most {limit:,} bytes per answer."
        )
    files: list[OutgoingAttachment] = []
    for item in forwarded:
        with item.file.open("rb") as stored:
            data = stored.read(limit + 1)
        files.append(
            OutgoingAttachment(
                filename=item.filename,
                content_type=item.content_type,
                data=data,
                content_id=item.content_id if item.is_inline else "",
            )
        )
    for upload in uploads:
        data = upload.read(limit + 1)
        files.append(
            OutgoingAttachment(
                filename=upload.name or "attachment",
                content_type=upload.content_type or "",
                data=data,
            )
        )
    if sum(len(item.data) for item in files) > limit:
        raise AnswerRefused(f"The attachments are too large: at most {limit:,} bytes per answer.")
    return files


def _message_id_domain(mailbox: Mailbox) -> str:
    domain = mailbox.email.rpartition("@")[2].strip().rstrip(".")
    with contextlib.suppress(UnicodeError):
        domain = domain.encode("idna").decode("ascii")
    return domain if domain and domain.isascii() else "mailhub.invalid"


def answer_submit(
    *,
    email_id: int,
    user: User,
    submission_key: str,
    mode: AnswerMode,
    to: str,
    cc: str,
    bcc: str,
    subject: str,
    body: str,
    include_quote: bool,
    forward_attachment_ids: Sequence[int],
    uploads: Sequence[UploadedFile[bytes]],
    next_status: str = "",
) -> OutboundMessage:
    """Store an answer of `user` to email `email_id` as an outgoing email of its mailbox with its
    OutboundMessage (pending), in one transaction; the caller dispatches the send on commit.

    A second submit with the same `submission_key` (double click, resubmitted page) returns the
    OutboundMessage of the first: the key is unique in the database, so two submits racing also
    make one. Raises AnswerRefused with a message for the agent.
    """
    key = (submission_key or "").strip()
    if not key or len(key) > 64:
        raise AnswerRefused("The form is incomplete: open the answer again.")
    existing = OutboundMessage.objects.filter(submission_key=key).first()
    if existing is not None:
        return _same_submitter(existing, user)
    if len(body) > MAX_BODY_CHARS:
        raise AnswerRefused(f"The text is too long: at most {MAX_BODY_CHARS:,} characters.")
    if next_status and next_status not in CaseStatus.values:
        raise AnswerRefused("Unknown case status.")
    written: list[str] = []
    try:
        with transaction.atomic():
            outbound = _submit_locked(
                email_id=email_id,
                user=user,
                key=key,
                mode=mode,
                recipients=_recipients(to, cc, bcc),
                subject=subject,
                body=body,
                include_quote=include_quote,
                forward_attachment_ids=forward_attachment_ids,
                uploads=uploads,
                next_status=next_status,
                written=written,
            )
    except IntegrityError:
        # The same form, submitted at the same moment, won the unique key: that one is the answer.
        _delete_files(written)
        existing = OutboundMessage.objects.filter(submission_key=key).first()
        if existing is None:
            raise
        return _same_submitter(existing, user)
    except BaseException:
        _delete_files(written)
        raise
    return outbound


def _same_submitter(outbound: OutboundMessage, user: User) -> OutboundMessage:
    if outbound.sent_by_id != user.pk:
        raise AnswerRefused("The form is incomplete: open the answer again.")
    return outbound


def _delete_files(names: list[str]) -> None:
    for name in names:
        with contextlib.suppress(OSError):
            default_storage.delete(name)


def _submit_locked(
    *,
    email_id: int,
    user: User,
    key: str,
    mode: AnswerMode,
    recipients: tuple[list[Pair], list[Pair], list[Pair], list[str]],
    subject: str,
    body: str,
    include_quote: bool,
    forward_attachment_ids: Sequence[int],
    uploads: Sequence[UploadedFile[bytes]],
    next_status: str,
    written: list[str],
) -> OutboundMessage:
    email = Email.objects.select_related("mailbox", "case", "lead").get(pk=email_id)
    mailbox = email.mailbox
    to, cc, bcc, envelope = recipients
    _rate_limit(user)
    files = _attachments(email=email, forward_attachment_ids=forward_attachment_ids, uploads=uploads)
    original = answer_original(email)
    carried = [item.content_id for item in files if item.content_id]
    text, html_body = body.replace("\r\n", "\n"), text_as_html(body)
    if include_quote:
        if mode == AnswerMode.FORWARD:
            text += "\n\n" + forward_text(original)
            html_body += "<br>" + forward_html(original, carried_content_ids=carried)
        else:
            text += "\n\n" + quote_text(original)
            html_body += "<br>" + quote_html(original, carried_content_ids=carried)
    in_reply_to, references = thread_headers(original)
    if mode == AnswerMode.FORWARD:
        # A forward starts a new conversation with someone else (RFC 5322 §3.6.4 is about
        # replies); References still ties it to the thread for our own threading.
        in_reply_to = ""
    raw = answer_message_build(
        from_name=mailbox.sender_name or mailbox.label,
        from_address=mailbox.email,
        to=to,
        cc=cc,
        subject=one_line(subject) or answer_subject(mode=mode, subject=email.subject),
        date=timezone.now(),
        message_id=make_msgid(domain=_message_id_domain(mailbox)),
        in_reply_to=in_reply_to,
        references=references,
        text=text,
        html_body=html_body,
        attachments=files,
    )
    with transaction.atomic():  # a savepoint: a lost race on the key rolls back only this
        outgoing = email_store_outgoing(mailbox=mailbox, raw=raw, sent_by_id=user.pk, written_files=written)
        # The answer belongs where the original is: the customer's reply to it then threads
        # into the same case by In-Reply-To (processing/services/threads.py).
        outgoing.case_id, outgoing.lead_id = email.case_id, email.lead_id
        outgoing.save(update_fields=["case", "lead"])
        outbound = OutboundMessage.objects.create(
            email=outgoing,
            submission_key=key,
            sent_by=user,
            envelope_recipients=envelope,
            bcc=[list(pair) for pair in bcc],
            sent_copy_status=(
                SentCopyStatus.PENDING if mailbox.imap_sent_folder.strip() else SentCopyStatus.NOT_WANTED
            ),
        )
    if next_status and email.case_id:
        case = Case.objects.select_for_update().get(pk=email.case_id)
        case_update(
            case_id=case.pk, user=user, status=next_status, priority=case.priority, assignee=case.assignee
        )
    logger.info("outbound %s stored for email %s by user %s", outbound.pk, email.pk, user.pk)
    return outbound
