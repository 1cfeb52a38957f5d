"""My Emails: the grid of the user's mailboxes, the view selector, an email's page and its HTML
frame, and converting an email to a case or a lead.

Thin: the selectors decide what the user may see (anything else is a 404, the same answer as for
something that does not exist), `sanitize` makes email HTML safe, the processing services convert.
The files (attachments, the original, inline images) are served by `downloads`.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from mailboxes.models import Email, EmailDirection, OutboundMessage
from mailboxes.services.visits import mailbox_view_choose, mailbox_visits_record
from mailhub.web.converters import database_id_from_text
from mailhub.web.leads_cases.forms import NoteForm
from mailhub.web.leads_cases.timeline import email_notes
from mailhub.web.sanitize import email_body_csp, email_html_document, sanitize_email_html
from mailhub.web.users import AuthenticatedHttpRequest
from processing.services import ConversionRefused, email_convert_to_case, email_convert_to_lead

from .access import email_get_for_user, mailbox_get_for_user
from .downloads import INLINE_IMAGE_TYPES, inline_image_token
from .email_page import (
    email_attachments,
    email_auto_replies,
    email_inline_images,
    email_text_body,
    email_thread,
)
from .forms import DEFAULT_PAGE_SIZE, PAGE_SIZES, EmailGridForm
from .grid import SORT_KEYS, EmailGridPage, EmailGridQuery, email_grid_page
from .view_selector import NEW_COUNT_CAP, email_grid_rows, email_view_for_user, latest_email_ids

# -- the grid -------------------------------------------------------------------------------------


@login_required
@require_GET
def email_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    view = email_view_for_user(user=request.user)
    # Before the grid: whatever arrives later stays new.
    seen_up_to = latest_email_ids(mailbox_ids=view.mailbox_ids)
    form = EmailGridForm(request.GET)
    query = form.grid_query()
    page_size = form.value("per_page", DEFAULT_PAGE_SIZE)
    page = email_grid_page(
        user=request.user,
        mailbox_ids=view.mailbox_ids,
        query=query,
        after=form.value("after"),
        before=form.value("before"),
        page_size=page_size,
    )
    page_number = form.value("page", 1) if (form.value("after") or form.value("before")) else 1
    if page_number > 1 and page.previous_cursor is None:
        page_number = 1  # walked back to the start
    first_page = page_number == 1
    if first_page and view.mailbox_ids:
        mailbox_visits_record(user=request.user, seen_up_to=seen_up_to)
    today = timezone.localdate()
    return render(
        request,
        "emails/list.html",
        {
            "view": view,
            "view_choices": [
                ("all", "All my mailboxes", view.chosen is None, new_count_label(view.total_new)),
                *(
                    (
                        str(choice.mailbox.pk),
                        choice.mailbox.label,
                        choice == view.chosen,
                        new_count_label(choice.new_count),
                    )
                    for choice in view.choices
                ),
            ],
            "current_new": new_count_label(view.new_count),
            "form": form,
            "query": query,
            "page": page,
            "rows": email_grid_rows(emails=page.emails, view=view),
            "page_number": page_number,
            "page_size": page_size,
            "urls": _grid_urls(request, query, page, page_number),
            "today": today.isoformat(),
            "this_year": str(today.year),
        },
    )


def new_count_label(count: int) -> str:
    return f"{NEW_COUNT_CAP}+" if count > NEW_COUNT_CAP else str(count)


_PAGING_PARAMETERS = ("after", "before", "page")


def _url_with(request: HttpRequest, **changes: str | None) -> str:
    """This grid's URL with some parameters changed (None removes one)."""
    params = request.GET.copy()
    for name, value in changes.items():
        params.pop(name, None)
        if value is not None:
            params[name] = value
    return f"{request.path}?{params.urlencode()}" if params else request.path


@dataclass(frozen=True)
class GridUrls:
    """Links of the grid page."""

    sort: dict[str, str]  # per sort key: sort by it (or reverse it, if it is the current one)
    next: str | None
    previous: str | None
    page_sizes: list[tuple[int, str]]
    clear: str  # the same view and order without filters nor search


def _grid_urls(
    request: HttpRequest, query: EmailGridQuery, page: EmailGridPage, page_number: int
) -> GridUrls:
    """Links of the grid page: sorting restarts at the first page, paging keeps every filter."""
    restart: dict[str, str | None] = dict.fromkeys(_PAGING_PARAMETERS)
    sort_urls = {}
    for sort in SORT_KEYS:
        if sort == query.sort:  # clicking the sorted column again reverses it
            order = "asc" if query.descending else "desc"
        else:
            order = "desc" if sort == "received" else "asc"
        sort_urls[sort] = _url_with(request, sort=sort, order=order, **restart)
    previous_url = None
    if page.previous_cursor:
        previous_url = (
            _url_with(request, **restart)
            if page_number <= 2
            else _url_with(request, before=page.previous_cursor, after=None, page=str(page_number - 1))
        )
    return GridUrls(
        sort=sort_urls,
        next=_url_with(request, after=page.next_cursor, before=None, page=str(page_number + 1))
        if page.next_cursor
        else None,
        previous=previous_url,
        page_sizes=[(size, _url_with(request, per_page=str(size), **restart)) for size in PAGE_SIZES],
        clear=_url_with(
            request,
            q=None,
            relation=None,
            attachments=None,
            received_from=None,
            received_until=None,
            **restart,
        ),
    )


@login_required
@require_POST
def email_view_select(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The view selector: "all" or a mailbox id, remembered for the user's next visits."""
    choice = request.POST.get("view", "")
    mailbox = None
    if choice != "all":
        mailbox_id = database_id_from_text(choice)
        mailbox = mailbox_get_for_user(user=request.user, pk=mailbox_id) if mailbox_id else None
        if mailbox is None:
            raise Http404("No such mailbox.")
    mailbox_view_choose(user=request.user, mailbox=mailbox)
    return redirect("emails:list")


# -- an email -------------------------------------------------------------------------------------


def _visible_email(request: HttpRequest, pk: int, *, defer: tuple[str, ...] = ()) -> Email:
    email = email_get_for_user(user=request.user, pk=pk, defer=defer)
    if email is None:
        raise Http404("No such email.")
    return email


@login_required
@require_GET
def email_detail(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    email = _visible_email(request, pk, defer=("text_body",))
    text = email_text_body(email=email)
    has_html = bool(email.html_body.strip())
    mode = "text" if request.GET.get("view") == "text" or not has_html else "html"
    show_images = request.GET.get("images") == "1"
    blocked_images = 0
    if mode == "html" and not show_images:
        # Only counted here (the frame's own request sanitizes for display) to offer the button.
        blocked_images = sanitize_email_html(
            email.html_body, inline_image_urls={}, allow_remote_images=False
        ).blocked_remote_images
    body_url = reverse("emails:body_html", args=[email.pk])
    if show_images:
        body_url += "?images=1"
    return render(
        request,
        "emails/detail.html",
        {
            "email": email,
            "mode": mode,
            "has_html": has_html,
            "show_images": show_images,
            "blocked_images": blocked_images,
            "body_url": body_url,
            "attachments": email_attachments(email=email),
            "thread": email_thread(user=request.user, email=email),
            "auto_replies": email_auto_replies(email=email),
            # An answer of staff: who sent it, its delivery status and the send-again form.
            "outbound": (
                OutboundMessage.objects.filter(email=email).select_related("sent_by").first()
                if email.direction == EmailDirection.OUTGOING
                else None
            ),
            "notes": email_notes(email=email),
            "note_form": NoteForm(),
            "can_convert_to_lead": email.lead_id is None and email.case_id is None,
            "can_convert_to_case": email.lead_id is None and email.case_id is None,
            "text": text,
            # urlize is slow on long texts (and a long text is rarely a note with a link in it).
            "large_text": len(text.text) > 200_000,
        },
    )


@login_required
@require_GET
def email_body_html(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """The email's HTML, sanitized, as the document of the sandboxed frame, under a strict CSP."""
    email = _visible_email(request, pk)
    allow_remote_images = request.GET.get("images") == "1"
    token = inline_image_token(user_id=request.user.pk, email_id=email.pk)
    inline_image_urls = {
        attachment.content_id: reverse("emails:inline_image", args=[email.pk, attachment.pk])
        + "?"
        + urlencode({"t": token})
        for attachment in email_inline_images(email=email, content_types=INLINE_IMAGE_TYPES)
    }
    sanitized = sanitize_email_html(
        email.html_body, inline_image_urls=inline_image_urls, allow_remote_images=allow_remote_images
    )
    response = HttpResponse(email_html_document(sanitized.html), content_type="text/html; charset=utf-8")
    response["Content-Security-Policy"] = email_body_csp(allow_remote_images=allow_remote_images)
    response["Referrer-Policy"] = "no-referrer"
    response["Cache-Control"] = "private, no-store"
    return response


# -- conversions ----------------------------------------------------------------------------------


@login_required
@require_POST
def email_convert_to_case_view(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    email = _visible_email(request, pk)
    try:
        case = email_convert_to_case(email_id=email.pk)
    except ConversionRefused as refused:
        messages.error(request, f"Not converted to a case: {refused}.")
        return redirect(email)
    messages.success(request, f"The email is now case {case.reference}.")
    return redirect(case)


@login_required
@require_POST
def email_convert_to_lead_view(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    email = _visible_email(request, pk)
    try:
        lead = email_convert_to_lead(email_id=email.pk)
    except ConversionRefused as refused:
        messages.error(request, f"Not converted to a lead: {refused}.")
        return redirect(email)
    messages.success(request, f"The email is now a lead: {lead.name}.")
    return redirect(lead)
