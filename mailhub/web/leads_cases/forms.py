"""Forms of the lead and case pages, the audited change of a case, and internal notes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.contrib.auth import get_user_model

from mailboxes import limits
from mailboxes.models import Mailbox
from mailhub.web.emails.access import mailboxes_visible_to
from mailhub.web.users import AnyUser
from processing.models import Case, CaseEvent, CasePriority, CaseStatus, LeadStatus
from processing.services.cases import case_update

from .selectors import ME, NOBODY, ListQuery, case_assignee_choices, people_in_lists

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    _UserChoiceField = forms.ModelChoiceField[User]
else:  # ModelChoiceField is generic in django-stubs only, not at run time
    _UserChoiceField = forms.ModelChoiceField


class _ListFilterForm(forms.Form):
    """GET filters of a list; an invalid value is ignored rather than refused."""

    status_choices: list[tuple[str, str]] = []
    person_label = "Person"

    q = forms.CharField(required=False, max_length=200, label="Search")
    status = forms.ChoiceField(required=False)
    person = forms.ChoiceField(required=False)
    mailbox = forms.ModelChoiceField(
        queryset=Mailbox.objects.none(), required=False, empty_label="All mailboxes"
    )

    def __init__(self, data: Mapping[str, Any] | None, *, user: AnyUser) -> None:
        super().__init__(data)
        cast(forms.ChoiceField, self.fields["status"]).choices = [("", "Any status"), *self.status_choices]
        self.fields["person"].label = self.person_label
        cast(forms.ChoiceField, self.fields["person"]).choices = [
            ("", "Anyone"),
            (ME, "Me"),
            (NOBODY, "Nobody"),
            *((str(person.pk), person.get_username()) for person in people_in_lists(user=user)),
        ]
        mailbox_field = cast("forms.ModelChoiceField[Mailbox]", self.fields["mailbox"])
        mailbox_field.queryset = mailboxes_visible_to(user).order_by("label")

    def list_query(self) -> ListQuery:
        self.is_valid()
        cleaned = {name: value for name, value in self.cleaned_data.items() if name not in self.errors}
        mailbox = cleaned.get("mailbox")
        return ListQuery(
            search=cleaned.get("q") or "",
            status=cleaned.get("status") or "",
            person=cleaned.get("person") or "",
            mailbox_id=mailbox.pk if mailbox else None,
        )


class LeadFilterForm(_ListFilterForm):
    status_choices = list(LeadStatus.choices)
    person_label = "Owner"


class CaseFilterForm(_ListFilterForm):
    status_choices = list(CaseStatus.choices)
    person_label = "Assignee"


class _AssigneeField(_UserChoiceField):
    def label_from_instance(self, obj: User) -> str:
        return obj.get_full_name() or obj.get_username()


class CaseUpdateForm(forms.Form):
    status = forms.ChoiceField(choices=CaseStatus.choices)
    priority = forms.ChoiceField(choices=CasePriority.choices)
    assignee = _AssigneeField(queryset=get_user_model().objects.none(), required=False, empty_label="Nobody")

    def __init__(self, *args: Any, case: Case, **kwargs: Any) -> None:
        kwargs.setdefault(
            "initial", {"status": case.status, "priority": case.priority, "assignee": case.assignee_id}
        )
        super().__init__(*args, **kwargs)
        self.case = case
        cast(_AssigneeField, self.fields["assignee"]).queryset = case_assignee_choices(case=case)

    def clean_assignee(self) -> User | None:
        assignee: User | None = self.cleaned_data["assignee"]
        # The choices come from users_with_access_to(); the decision is the one rule itself.
        if assignee is not None and not (
            Mailbox.objects.accessible_to(assignee).filter(pk=self.case.mailbox_id).exists()
        ):
            raise forms.ValidationError("This person cannot access the case's mailbox.")
        return assignee

    def save(self, *, user: User) -> list[CaseEvent]:
        return case_update(
            case_id=self.case.pk,
            user=user,
            status=self.cleaned_data["status"],
            priority=self.cleaned_data["priority"],
            assignee=self.cleaned_data["assignee"],
        )


class NoteForm(forms.Form):
    """An internal note, on a case's page or an email's. The service refuses again what the form
    lets through (an empty or too long body), so a hand-made POST gets no further."""

    body = forms.CharField(
        label="Internal note",
        max_length=limits.MAX_NOTE_CHARS,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 4, "placeholder": "Only staff see notes; never emailed."}),
    )
