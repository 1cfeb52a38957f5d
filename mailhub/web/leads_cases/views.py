"""Leads and cases: lists, pages, the audited change of a case and its internal notes. Thin:
selectors read (and decide visibility: anything else is a 404); changes go through
processing.services.cases and processing.services.notes."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from mailboxes.models import Email
from mailhub.web.emails.email_page import EMAILS_PER_RECORD_PAGE, emails_of_lead
from mailhub.web.users import AuthenticatedHttpRequest
from processing.models import Case, Lead
from processing.services.notes import NoteRefused, note_add

from .forms import CaseFilterForm, CaseUpdateForm, LeadFilterForm, NoteForm
from .selectors import (
    case_follow_ups,
    case_get_for_user,
    case_list,
    lead_get_for_user,
    lead_list,
)
from .timeline import case_timeline_page

LIST_PAGE_SIZE = 50


@login_required
@require_GET
def lead_list_view(request: AuthenticatedHttpRequest) -> HttpResponse:
    form = LeadFilterForm(request.GET, user=request.user)
    page = Paginator(lead_list(user=request.user, query=form.list_query()), LIST_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    return render(request, "leads/list.html", {"form": form, "page": page})


def _visible_lead(request: HttpRequest, pk: int) -> Lead:
    lead = lead_get_for_user(user=request.user, pk=pk)
    if lead is None:
        raise Http404("No such lead.")
    return lead


@login_required
@require_GET
def lead_detail(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    lead = _visible_lead(request, pk)
    emails = _emails_page(request, emails_of_lead(user=request.user, lead_id=lead.pk))
    return render(request, "leads/detail.html", {"lead": lead, "emails": emails})


def _emails_page(request: HttpRequest, emails: QuerySet[Email]) -> Page[Email]:
    """One page of a case's or a lead's emails: a thread of 10,000 replies is not one page."""
    return Paginator(emails, EMAILS_PER_RECORD_PAGE).get_page(request.GET.get("page"))


@login_required
@require_GET
def case_list_view(request: AuthenticatedHttpRequest) -> HttpResponse:
    form = CaseFilterForm(request.GET, user=request.user)
    page = Paginator(case_list(user=request.user, query=form.list_query()), LIST_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    return render(request, "cases/list.html", {"form": form, "page": page})


def _visible_case(request: HttpRequest, pk: int) -> Case:
    case = case_get_for_user(user=request.user, pk=pk)
    if case is None:
        raise Http404("No such case.")
    return case


def _case_page(
    request: HttpRequest,
    case: Case,
    form: CaseUpdateForm,
    note_form: NoteForm | None = None,
    *,
    status: int = 200,
) -> HttpResponse:
    context = {
        "case": case,
        "form": form,
        "note_form": note_form or NoteForm(),
        "timeline": case_timeline_page(
            user=request.user,
            case=case,
            after=request.GET.get("after"),
            before=request.GET.get("before"),
            latest=request.GET.get("latest") == "1",
        ),
        "follow_ups": case_follow_ups(user=request.user, case=case),
    }
    return render(request, "cases/detail.html", context, status=status)


@login_required
@require_GET
def case_detail(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    case = _visible_case(request, pk)
    return _case_page(request, case, CaseUpdateForm(case=case))


@login_required
@require_POST
def case_update_view(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    case = _visible_case(request, pk)
    form = CaseUpdateForm(request.POST, case=case)
    if not form.is_valid():
        return _case_page(request, case, form)
    events = form.save(user=request.user)
    if events:
        changed = ", ".join(event.field for event in events)
        messages.success(request, f"Case {case.reference} updated: {changed}.")
    else:
        messages.info(request, "Nothing changed.")
    return redirect(case)


@login_required
@require_POST
def case_note_add_view(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """An internal note on the case: stored, never sent. A refused note is shown again with its
    text and the reason, so nothing typed is lost."""
    case = _visible_case(request, pk)
    form = NoteForm(request.POST)
    if form.is_valid():
        try:
            note = note_add(user=request.user, body=form.cleaned_data["body"], case_id=case.pk)
        except NoteRefused as refused:
            form.add_error("body", f"Not added: {refused}.")
        else:
            messages.success(request, "Note added.")
            return redirect(f"{case.get_absolute_url()}?latest=1#note-{note.pk}")
    return _case_page(request, case, CaseUpdateForm(case=case), form, status=400)
