"""An internal note written on an email's page. Thin: the one access rule finds the email (a 404
otherwise), processing.services.notes stores the note; nothing here sends anything."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from mailhub.web.leads_cases.forms import NoteForm
from mailhub.web.users import AuthenticatedHttpRequest
from processing.services.notes import NoteRefused, note_add

from .access import email_get_for_user


@login_required
@require_POST
def email_note_add(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    email = email_get_for_user(user=request.user, pk=pk, defer=("text_body", "html_body", "headers"))
    if email is None:
        raise Http404("No such email.")
    form = NoteForm(request.POST)
    if not form.is_valid():
        # The textarea's `required` and `maxlength` stop these in a browser; a hand-made POST
        # gets the reason, not a stored note.
        errors = "; ".join(str(error) for error in form.errors.get("body", []))
        messages.error(request, f"Note not added: {errors}")
        return redirect(email)
    try:
        note = note_add(user=request.user, body=form.cleaned_data["body"], email_id=email.pk)
    except NoteRefused as refused:
        messages.error(request, f"Note not added: {refused}.")
        return redirect(email)
    messages.success(request, "Note added" + (" to the case." if note.case_id else "."))
    return redirect(f"{email.get_absolute_url()}#note-{note.pk}")
