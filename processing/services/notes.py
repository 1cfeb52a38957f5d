"""Internal notes of staff on cases and emails: kept in mailhub, never emailed to anyone.

Nothing here sends or enqueues anything: a note is a row and nothing else, so no code path can
turn it into a message to the customer. Who may write a note on what is decided by the page
(the one access rule of the staff pages); this service only keeps the row well-formed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction

from mailboxes import limits
from mailboxes.models import Email
from processing.models import Case, Note

if TYPE_CHECKING:
    from django.contrib.auth.models import User  # settings.AUTH_USER_MODEL


class NoteRefused(ValueError):
    """The note is not stored: empty, too long, or on nothing that exists. The message is shown
    to the author as it is."""


def note_add(*, user: User, body: str, case_id: int | None = None, email_id: int | None = None) -> Note:
    """Store a note on a case or on an email.

    A note on an email that belongs to a case goes to that case too (and keeps the email): the
    case's timeline is where the team reads it. A note on an email without a case stays on the
    email, and shows in the timeline of the case it joins later. The body is refused, not cut,
    when empty or longer than `limits.MAX_NOTE_CHARS`: its author is there to shorten it.
    """
    if (case_id is None) == (email_id is None):
        raise ValueError("a note goes on a case or on an email: give exactly one of them")
    body = limits.clean_text(body).strip()
    if not body:
        raise NoteRefused("the note is empty")
    if len(body) > limits.MAX_NOTE_CHARS:
        raise NoteRefused(f"the note is longer than {limits.MAX_NOTE_CHARS:,} characters")
    with transaction.atomic():
        if email_id is not None:
            # Locked so that the case read here is the email's case when the note is stored,
            # not one it left a moment ago.
            email = Email.objects.select_for_update().filter(pk=email_id).only("pk", "case_id").first()
            if email is None:
                raise NoteRefused("no such email")
            case_id = email.case_id
        elif case_id is not None and not Case.objects.filter(pk=case_id).exists():
            raise NoteRefused("no such case")
        note = Note(
            case_id=case_id,
            email_id=email_id,
            author=user,
            author_name=user.get_username(),
            body=body,
        )
        limits.fit_row(note)  # the author's name to its column, the body cleaned
        note.save(force_insert=True)
    return note
