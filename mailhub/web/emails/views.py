"""My Emails: the grid of the user's mailboxes, an email's page, its body and attachments.

Thin: the selectors decide what the user may see (anything else is a 404, the same answer as for
something that does not exist), `sanitize` makes email HTML safe, the processing services convert.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote, urlencode

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core import signing
from django.db.models.fields.files import FieldFile
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from mailboxes.models import Email, MailboxViewPreference, MailboxVisit
from mailhub.web.converters import database_id_from_text
from mailhub.web.sanitize import email_body_csp, email_html_document, sanitize_email_html
from processing.services import ConversionRefused, email_convert_to_case, email_convert_to_lead

from .access import attachment_get_for_user, email_get_for_user, mailbox_get_for_user
from .email_page import (
    email_attachments,
    email_auto_replies,
    email_inline_images,
    email_text_body,
    email_thread,
)
from .grid import SORT_KEYS, EmailGridQuery, Relation, email_grid_page
from .view_selector import NEW_COUNT_CAP, email_view_for_user, latest_email_ids

PAGE_SIZES = (25, 50, 100)
DEFAULT_PAGE_SIZE = 50


# -- the grid -------------------------------------------------------------------------------------


class EmailGridForm(forms.Form):
    """The grid's GET parameters. An invalid field is ignored (its default applies), so an edited
    or outdated URL still shows a page."""

    q = forms.CharField(required=False, max_length=200)
    relation = forms.ChoiceField(
        required=False,
        choices=[
            ("", "Any"),
            (Relation.LEAD, "Has a lead"),
            (Relation.CASE, "Has a case"),
            (Relation.NEITHER, "Neither"),
        ],
    )
    attachments = forms.BooleanField(required=False)
    received_from = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    received_until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    sort = forms.ChoiceField(required=False, choices=[(key, key) for key in SORT_KEYS])
    order = forms.ChoiceField(required=False, choices=[("desc", "desc"), ("asc", "asc")])
    per_page = forms.TypedChoiceField(
        required=False, coerce=int, choices=[(size, size) for size in PAGE_SIZES], empty_value=None
    )
    after = forms.CharField(required=False, max_length=2000)
    before = forms.CharField(required=False, max_length=2000)
    page = forms.IntegerField(required=False, min_value=1, max_value=10_000_000)

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("received_from"), cleaned.get("received_until")
        if start and end and start > end:
            # Neither bound is trusted then: the whole range is ignored, and the reader told why.
            self.add_error(None, "The date range ends before it starts: it was ignored.")
            cleaned.pop("received_from")
            cleaned.pop("received_until")
        return cleaned

    def value(self, name: str, default=None):
        self.is_valid()
        value = self.cleaned_data.get(name) if name not in self.errors else None
        return default if value in (None, "") else value

    def grid_query(self) -> EmailGridQuery:
        sort = self.value("sort", "received")
        return EmailGridQuery(
            search=self.value("q", ""),
            relation=self.value("relation", ""),
            with_attachments=bool(self.value("attachments", False)),
            received_from=self.value("received_from"),
            received_until=self.value("received_until"),
            sort=sort,
            # Newest first by date; A to Z by sender and subject.
            descending=self.value("order", "desc" if sort == "received" else "asc") == "desc",
        )

    @property
    def is_filtered(self) -> bool:
        query = self.grid_query()
        return bool(
            query.search
            or query.relation
            or query.with_attachments
            or query.received_from
            or query.received_until
        )


@login_required
@require_GET
def email_list(request: HttpRequest) -> HttpResponse:
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
        MailboxVisit.objects.record(user=request.user, seen_up_to=seen_up_to)
    # The rows that are new to this reader: above the watermark of the previous visit.
    seen_before = {box.pk: box.seen_up_to for box in view.mailboxes}
    for email in page.emails:
        email.is_new = email.pk > seen_before.get(email.mailbox_id, 0)
    today = timezone.localdate()
    return render(
        request,
        "emails/list.html",
        {
            "view": view,
            "view_choices": [
                ("all", "All my mailboxes", view.mailbox is None, new_count_label(view.total_new)),
                *(
                    (str(box.pk), box.label, box == view.mailbox, new_count_label(box.new_count))
                    for box in view.mailboxes
                ),
            ],
            "current_new": new_count_label(view.mailbox.new_count if view.mailbox else view.total_new),
            "form": form,
            "query": query,
            "page": page,
            "page_number": page_number,
            "page_size": page_size,
            "urls": _grid_urls(request, query, page, page_number, page_size),
            "today": today.isoformat(),
            "this_year": str(today.year),
        },
    )


def new_count_label(count: int) -> str:
    return f"{NEW_COUNT_CAP}+" if count > NEW_COUNT_CAP else str(count)


_PAGING_PARAMETERS = ("after", "before", "page")


def _url_with(request: HttpRequest, **changes) -> str:
    """This grid's URL with some parameters changed (None removes one)."""
    params = request.GET.copy()
    for name, value in changes.items():
        params.pop(name, None)
        if value is not None:
            params[name] = value
    return f"{request.path}?{params.urlencode()}" if params else request.path


def _grid_urls(request, query: EmailGridQuery, page, page_number: int, page_size: int) -> dict:
    """Links of the grid page: sorting restarts at the first page, paging keeps every filter."""
    restart = dict.fromkeys(_PAGING_PARAMETERS)
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
    return {
        "sort": sort_urls,
        "next": _url_with(request, after=page.next_cursor, before=None, page=str(page_number + 1))
        if page.next_cursor
        else None,
        "previous": previous_url,
        "page_sizes": [(size, _url_with(request, per_page=str(size), **restart)) for size in PAGE_SIZES],
        "clear": _url_with(
            request,
            q=None,
            relation=None,
            attachments=None,
            received_from=None,
            received_until=None,
            **restart,
        ),
    }


@login_required
@require_POST
def email_view_select(request: HttpRequest) -> HttpResponse:
    """The view selector: "all" or a mailbox id, remembered for the user's next visits."""
    choice = request.POST.get("view", "")
    mailbox = None
    if choice != "all":
        mailbox_id = database_id_from_text(choice)
        mailbox = mailbox_get_for_user(user=request.user, pk=mailbox_id) if mailbox_id else None
        if mailbox is None:
            raise Http404("No such mailbox.")
    MailboxViewPreference.objects.choose(user=request.user, mailbox=mailbox)
    return redirect("emails:list")


# -- an email -------------------------------------------------------------------------------------


def _visible_email(request: HttpRequest, pk: int, *, defer: tuple[str, ...] = ()) -> Email:
    email = email_get_for_user(user=request.user, pk=pk, defer=defer)
    if email is None:
        raise Http404("No such email.")
    return email


@login_required
@require_GET
def email_detail(request: HttpRequest, pk: int) -> HttpResponse:
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
            "can_convert_to_lead": email.lead_id is None and email.case_id is None,
            "can_convert_to_case": email.lead_id is None and email.case_id is None,
            "text": text,
            # urlize is slow on long texts (and a long text is rarely a note with a link in it).
            "large_text": len(text.text) > 200_000,
        },
    )


# The frame cannot send the session cookie (a sandboxed document has an opaque origin, so its
# requests are cross-site and SameSite=Lax cookies stay home): its inline images carry a signed
# token naming the reader instead, and the reader's access is checked again on every image.
INLINE_IMAGE_SALT = "mailhub.emails.inline-image"
INLINE_IMAGE_TOKEN_MAX_AGE = 12 * 3600
INLINE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"})


def inline_image_token(*, user_id: int, email_id: int) -> str:
    return signing.dumps([user_id, email_id], salt=INLINE_IMAGE_SALT)


def _inline_image_reader(token: str, email_id: int):
    try:
        user_id, token_email_id = signing.loads(
            token, salt=INLINE_IMAGE_SALT, max_age=INLINE_IMAGE_TOKEN_MAX_AGE
        )
    except (signing.BadSignature, ValueError, TypeError):
        return None
    if token_email_id != email_id:
        return None
    return get_user_model().objects.filter(pk=user_id).first()


@login_required
@require_GET
def email_body_html(request: HttpRequest, pk: int) -> HttpResponse:
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


@require_GET
def email_inline_image(request: HttpRequest, pk: int, attachment_pk: int) -> HttpResponse:
    """An inline (cid:) image of an email, for its frame: authorized by the frame's token."""
    reader = _inline_image_reader(request.GET.get("t", ""), pk)
    if reader is None:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        reader = request.user
    attachment = attachment_get_for_user(user=reader, email_pk=pk, attachment_pk=attachment_pk)
    if attachment is None or attachment.content_type not in INLINE_IMAGE_TYPES:
        raise Http404("No such image.")
    response = _file_response(attachment.file, content_type=attachment.content_type)
    response["Content-Disposition"] = "inline"
    return response


# -- attachments ----------------------------------------------------------------------------------

# Served with their declared type only when it is harmless; anything else (text/html, SVG,
# XML, unknown) is a plain byte stream: a download must never be rendered as our own page.
DOWNLOAD_TYPES = frozenset(
    {
        *INLINE_IMAGE_TYPES,
        "application/pdf",
        "application/zip",
        "text/plain",
        "text/csv",
        "text/calendar",
        "application/msword",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.oasis.opendocument.text",
        "application/vnd.oasis.opendocument.spreadsheet",
        "message/rfc822",
    }
)
_UNSAFE_FILENAME_CHARACTERS = re.compile(r"[\x00-\x1f\x7f/\\]")
_ASCII_FALLBACK_UNSAFE = re.compile(r'[^\x20-\x7e]|["%;\\]')


def download_content_type(declared: str) -> str:
    declared = declared.split(";", 1)[0].strip().lower()
    return declared if declared in DOWNLOAD_TYPES else "application/octet-stream"


def attachment_content_disposition(filename: str) -> str:
    """`attachment` with the sender's filename, safe whatever it contains (RFC 6266).

    Control characters (a CR LF would end the header) and path separators become "_"; the
    UTF-8 name goes in `filename*` (RFC 8187 percent-encoding), and an ASCII look-alike in
    `filename` for old clients, without quotes, backslashes or percent signs.
    """
    name = _UNSAFE_FILENAME_CHARACTERS.sub("_", filename).strip().strip(".") or "attachment"
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    ascii_name = _ASCII_FALLBACK_UNSAFE.sub("_", ascii_name).strip() or "attachment"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def _file_response(stored: FieldFile, *, content_type: str) -> FileResponse:
    try:
        handle = stored.open("rb")
    except (FileNotFoundError, ValueError) as exc:  # row without its file: nothing to serve
        raise Http404("The file is missing.") from exc
    response = FileResponse(handle, content_type=content_type)
    response["X-Content-Type-Options"] = "nosniff"
    # Even if a browser ever rendered it, it would run nothing and reach nothing.
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, no-store"
    return response


@login_required
@require_GET
def attachment_download(request: HttpRequest, pk: int, attachment_pk: int) -> HttpResponse:
    attachment = attachment_get_for_user(user=request.user, email_pk=pk, attachment_pk=attachment_pk)
    if attachment is None:
        raise Http404("No such attachment.")
    response = _file_response(attachment.file, content_type=download_content_type(attachment.content_type))
    response["Content-Disposition"] = attachment_content_disposition(attachment.filename)
    return response


@login_required
@require_GET
def email_original_download(request: HttpRequest, pk: int) -> HttpResponse:
    """The raw message as stored (RFC 5322 bytes), for what the page cuts (a long body, the
    attachments beyond the page's list, headers): a download, never rendered."""
    email = _visible_email(request, pk)
    response = _file_response(email.raw, content_type="message/rfc822")
    response["Content-Disposition"] = attachment_content_disposition(f"email-{email.pk}.eml")
    return response


# -- conversions ----------------------------------------------------------------------------------


@login_required
@require_POST
def email_convert_to_case_view(request: HttpRequest, pk: int) -> HttpResponse:
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
def email_convert_to_lead_view(request: HttpRequest, pk: int) -> HttpResponse:
    email = _visible_email(request, pk)
    try:
        lead = email_convert_to_lead(email_id=email.pk)
    except ConversionRefused as refused:
        messages.error(request, f"Not converted to a lead: {refused}.")
        return redirect(email)
    messages.success(request, f"The email is now a lead: {lead.name}.")
    return redirect(lead)
