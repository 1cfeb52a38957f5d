"""Read-only queries of the lead and case pages.

Every function starts from `Mailbox.objects.accessible_to(user)`: a lead or case is visible
exactly when its mailbox is. Not visible and not existing both give None (the page answers 404).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.db.models import Q, QuerySet

from mailboxes.access import users_granted_any_q
from mailboxes.models import Mailbox
from mailhub.web.converters import database_id_from_text
from mailhub.web.emails.access import users_with_access_to, without_mailbox_secrets
from mailhub.web.users import AnyUser
from processing.models import Case, Lead

if TYPE_CHECKING:
    from django.contrib.auth.models import User

# Person filters of the lists: "me", "none" (unassigned) or a user id as text.
ME = "me"
NOBODY = "none"


def leads_visible_to(user: AnyUser) -> QuerySet[Lead]:
    return Lead.objects.filter(mailbox__in=Mailbox.objects.accessible_to(user))


def cases_visible_to(user: AnyUser) -> QuerySet[Case]:
    return Case.objects.filter(mailbox__in=Mailbox.objects.accessible_to(user))


# What a lead's or case's page does not show of the related rows it loads: the mailbox's
# secrets (decrypted on load) and the source email's bodies (only its subject is linked).
_UNSHOWN = (
    *without_mailbox_secrets("mailbox"),
    "source_email__text_body",
    "source_email__html_body",
    "source_email__headers",
)


def lead_get_for_user(*, user: AnyUser, pk: int) -> Lead | None:
    return (
        leads_visible_to(user)
        .select_related("mailbox", "owner", "source_email")
        .defer(*_UNSHOWN)
        .filter(pk=pk)
        .first()
    )


def case_get_for_user(*, user: AnyUser, pk: int) -> Case | None:
    return (
        cases_visible_to(user)
        .select_related("mailbox", "owner", "assignee", "previous_case", "source_email")
        .defer(*_UNSHOWN, "previous_case__description")
        .filter(pk=pk)
        .first()
    )


@dataclass(frozen=True)
class ListQuery:
    search: str = ""
    status: str = ""
    person: str = ""  # the case's assignee or the lead's owner: "", ME, NOBODY or a user id
    mailbox_id: int | None = None


def _person_condition(field: str, person: str, user: AnyUser) -> Q:
    if person == ME:
        return Q(**{f"{field}_id": user.pk})
    if person == NOBODY:
        return Q(**{f"{field}__isnull": True})
    person_id = database_id_from_text(person)
    if person_id is not None:
        return Q(**{f"{field}_id": person_id})
    return Q()


def lead_list(*, user: AnyUser, query: ListQuery) -> QuerySet[Lead]:
    leads = (
        leads_visible_to(user)
        .select_related("mailbox", "owner")
        # The notes are a whole email body, chosen by the sender: never loaded for a list.
        .defer("notes", *without_mailbox_secrets("mailbox"))
    )
    if query.status:
        leads = leads.filter(status=query.status)
    if query.mailbox_id:
        leads = leads.filter(mailbox_id=query.mailbox_id)
    leads = leads.filter(_person_condition("owner", query.person, user))
    for term in query.search.split()[:8]:
        leads = leads.filter(Q(name__icontains=term) | Q(email__icontains=term) | Q(subject__icontains=term))
    return leads.order_by("-created_at", "-pk")


def case_list(*, user: AnyUser, query: ListQuery) -> QuerySet[Case]:
    cases = (
        cases_visible_to(user)
        .select_related("mailbox", "assignee")
        # The description is a whole email body, chosen by the sender: never loaded for a list.
        .defer("description", *without_mailbox_secrets("mailbox"))
    )
    if query.status:
        cases = cases.filter(status=query.status)
    if query.mailbox_id:
        cases = cases.filter(mailbox_id=query.mailbox_id)
    cases = cases.filter(_person_condition("assignee", query.person, user))
    for term in query.search.split()[:8]:
        condition = (
            Q(subject__icontains=term)
            | Q(reporter_name__icontains=term)
            | Q(reporter_address__icontains=term)
        )
        number = term.lstrip("#")
        if number.isascii() and number.isdecimal() and len(number) <= 9:
            condition |= Q(number=int(number))
        cases = cases.filter(condition)
    return cases.order_by("-created_at", "-pk")


def people_in_lists(*, user: AnyUser) -> QuerySet[User]:
    """Users the person filter of the lists offers: those who can see one of the user's mailboxes
    (anyone else cannot own or be assigned their leads and cases). One query."""
    user_model = get_user_model()
    if not user.is_authenticated:
        return user_model.objects.none()
    granted = users_granted_any_q(Mailbox.objects.accessible_to(user))
    return user_model.objects.filter(pk__in=user_model.objects.filter(granted).values("pk")).order_by(
        "username"
    )


def case_assignee_choices(*, case: Case) -> QuerySet[User]:
    """Active users who can access the case's mailbox."""
    return users_with_access_to(mailbox=case.mailbox)


# A case's page shows its first follow-ups (its changes are in the timeline, a page at a time:
# see timeline.py): a case followed up by a script every minute must not make a huge page.
CASE_FOLLOW_UPS_SHOWN = 50


def case_follow_ups(*, user: AnyUser, case: Case) -> list[Case]:
    follow_ups = cases_visible_to(user).filter(previous_case=case).defer("description")
    return list(follow_ups.order_by("created_at", "pk")[:CASE_FOLLOW_UPS_SHOWN])
