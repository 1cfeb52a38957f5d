"""Compose and send answers (reply, reply all, forward) and send one again. Thin: access through
`mailhub.web.emails.access` (404 for anything not visible, also a forwarded attachment of
another email), the processing service checks and stores, the send is dispatched after commit."""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from autoresponse.models import EmailTemplate
from mailboxes.models import Email, EmailDirection, OutboundMessage, OutboundStatus
from mailboxes.services.sending import outbound_send_again
from mailhub.tasks import enqueue_after_commit, send_outbound
from mailhub.web.converters import database_id_from_text
from mailhub.web.emails.access import attachment_get_for_user, email_get_for_user
from mailhub.web.users import AuthenticatedHttpRequest
from processing.answer_drafts import AnswerMode, format_pairs
from processing.services.answers import (
    AnswerRefused,
    answer_prefill,
    answer_quote,
    answer_submit,
    canned_response_render,
)

from .forms import AnswerForm, SendAgainForm

TITLES = {AnswerMode.REPLY: "Reply", AnswerMode.REPLY_ALL: "Reply all", AnswerMode.FORWARD: "Forward"}


def _visible_email(request: AuthenticatedHttpRequest, pk: int) -> Email:
    email = email_get_for_user(user=request.user, pk=pk)
    if email is None:
        raise Http404("No such email.")
    return email


def _form(request: AuthenticatedHttpRequest, email: Email, **kwargs: object) -> AnswerForm:
    attachments = [
        (item.pk, f"{item.filename} ({item.size:,} bytes)") for item in email.attachments.all()[:300]
    ]
    canned = list(EmailTemplate.objects.values_list("pk", "name")[:500])
    return AnswerForm(
        attachment_choices=attachments, canned_choices=canned, on_case=bool(email.case_id), **kwargs
    )


def _page(
    request: AuthenticatedHttpRequest, email: Email, mode: AnswerMode, form: AnswerForm, status: int = 200
) -> HttpResponse:
    return render(
        request,
        "answers/compose.html",
        {
            "email": email,
            "mode": mode.value,
            "title": TITLES[mode],
            "form": form,
            "quote": answer_quote(email=email, mode=mode),
        },
        status=status,
    )


def _check_forward_ids(request: AuthenticatedHttpRequest, email: Email) -> list[int]:
    """Every attachment id the form names must be one of this email's that the user may see:
    anything else is a 404, the answer for what does not exist."""
    ids = []
    for value in request.POST.getlist("forward_attachments")[:300]:
        attachment_id = database_id_from_text(value)
        if attachment_id is None or (
            attachment_get_for_user(user=request.user, email_pk=email.pk, attachment_pk=attachment_id) is None
        ):
            raise Http404("No such attachment.")
        ids.append(attachment_id)
    return ids


@login_required
@require_http_methods(["GET", "POST"])
def answer_compose(request: AuthenticatedHttpRequest, pk: int, mode: str) -> HttpResponse:
    email = _visible_email(request, pk)
    answer_mode = AnswerMode(mode)
    if request.method == "GET":
        draft = answer_prefill(email=email, mode=answer_mode, user=request.user)
        form = _form(
            request,
            email,
            initial={
                "submission_key": uuid.uuid4().hex,
                "to": format_pairs(draft.to),
                "cc": format_pairs(draft.cc),
                "subject": draft.subject,
                "body": draft.body,
                "include_quote": True,
                "forward_attachments": draft.attachment_ids,
            },
        )
        return _page(request, email, answer_mode, form)

    forward_ids = _check_forward_ids(request, email)
    if "insert" in request.POST:
        return _insert_canned(request, email, answer_mode, forward_ids)
    form = _form(request, email, data=request.POST, files=request.FILES)
    if not form.is_valid():
        return _page(request, email, answer_mode, form, status=400)
    data = form.cleaned_data
    try:
        outbound = answer_submit(
            email_id=email.pk,
            user=request.user,
            submission_key=data["submission_key"],
            mode=answer_mode,
            to=data["to"],
            cc=data["cc"],
            bcc=data["bcc"],
            subject=data["subject"],
            body=data["body"],
            include_quote=data["include_quote"],
            forward_attachment_ids=forward_ids,
            uploads=data["uploads"],
            next_status=data.get("next_status") or "",
        )
    except AnswerRefused as refused:
        messages.error(request, f"Not sent: {refused}")
        return _page(request, email, answer_mode, form, status=400)
    _dispatch(outbound)
    _say_outcome(request, outbound)
    return redirect(email)


def _insert_canned(
    request: AuthenticatedHttpRequest, email: Email, mode: AnswerMode, forward_ids: list[int]
) -> HttpResponse:
    """The "Insert" button: the canned response goes above what is written (the signature stays
    last); no JavaScript needed. Chosen files are not kept by a browser across this round trip."""
    post = request.POST
    body = post.get("body", "")
    template_id = database_id_from_text(post.get("canned", ""))
    if template_id is None:
        messages.error(request, "Choose a canned response to insert.")
    else:
        try:
            text = canned_response_render(template_id=template_id, email=email, user=request.user)
        except AnswerRefused as refused:
            messages.error(request, str(refused))
        else:
            body = text.rstrip("\n") + "\n" + body
    initial: dict[str, object] = {
        name: post.get(name, "") for name in ("submission_key", "to", "cc", "bcc", "subject")
    }
    initial |= {
        "body": body,
        "include_quote": "include_quote" in post,
        "forward_attachments": forward_ids,
        "next_status": post.get("next_status", ""),
        "canned": post.get("canned", ""),
    }
    return _page(request, email, mode, _form(request, email, initial=initial))


def _dispatch(outbound: OutboundMessage) -> None:
    if outbound.status == OutboundStatus.PENDING:
        enqueue_after_commit(send_outbound, outbound.pk)


def _say_outcome(request: AuthenticatedHttpRequest, outbound: OutboundMessage) -> None:
    outbound.refresh_from_db()
    if outbound.status == OutboundStatus.SENT:
        note = f" ({outbound.reason})" if outbound.reason else ""
        messages.success(request, f"Sent.{note}")
    elif outbound.status in (OutboundStatus.PENDING, OutboundStatus.SENDING):
        messages.info(request, "Sending: the answer is queued and goes out shortly.")
    else:
        messages.error(request, f"{outbound.get_status_display()}: {outbound.reason}")


@login_required
@require_POST
def answer_send_again(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """A failed or uncertain answer back to pending and sent. Uncertain needs the box ticked:
    it may have arrived, and a second copy must be a person's informed choice."""
    email = _visible_email(request, pk)
    outbound = OutboundMessage.objects.filter(email=email, email__direction=EmailDirection.OUTGOING).first()
    if outbound is None:
        raise Http404("Not an answer.")
    form = SendAgainForm(request.POST)
    checked = form.is_valid() and form.cleaned_data["checked"]
    if outbound.status == OutboundStatus.UNCERTAIN and not checked:
        messages.error(request, "Not sent again: first check that it did not arrive, then tick the box.")
        return redirect(email)
    if not outbound_send_again(
        outbound_id=outbound.pk, requested_by=request.user.get_username(), uncertain_checked=checked
    ):
        outbound.refresh_from_db()
        if outbound.status == OutboundStatus.UNCERTAIN:
            messages.error(request, "Not sent again: first check that it did not arrive, then tick the box.")
            return redirect(email)
        messages.error(request, "Not sent again: it is not failed nor of unknown outcome (any more).")
        return redirect(email)
    outbound.refresh_from_db()
    _dispatch(outbound)
    _say_outcome(request, outbound)
    return redirect(email)
