"""The compose form of an answer. Plain text only: the agent writes in a textarea, the HTML part
is made from it (escaped) and from the sanitized quote, so no agent HTML ever needs sanitizing."""

from __future__ import annotations

from typing import Any

from django import forms

from processing.models import CaseStatus


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any = None) -> Any:
        single = super().clean
        if isinstance(data, list | tuple):
            return [single(item, initial) for item in data]
        return [single(data, initial)] if data else []


class AnswerForm(forms.Form):
    submission_key = forms.CharField(max_length=64, widget=forms.HiddenInput)
    to = forms.CharField(label="To", max_length=64 * 1024, required=False)
    cc = forms.CharField(label="Cc", max_length=64 * 1024, required=False)
    bcc = forms.CharField(label="Bcc", max_length=64 * 1024, required=False)
    subject = forms.CharField(max_length=998, required=False)
    body = forms.CharField(widget=forms.Textarea(attrs={"rows": 14}), max_length=200_000, required=False)
    include_quote = forms.BooleanField(label="Include the original", required=False, initial=True)
    forward_attachments = forms.TypedMultipleChoiceField(
        label="Attachments of the original", coerce=int, required=False, widget=forms.CheckboxSelectMultiple
    )
    uploads = MultipleFileField(label="Add files", required=False)
    next_status = forms.ChoiceField(label="Then set the case to", required=False)
    canned = forms.TypedChoiceField(label="Canned response", coerce=int, required=False, empty_value=None)

    def __init__(
        self,
        *args: Any,
        attachment_choices: list[tuple[int, str]],
        canned_choices: list[tuple[int, str]],
        on_case: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fields["forward_attachments"].choices = attachment_choices  # type: ignore[attr-defined]
        self.fields["canned"].choices = [("", "—"), *canned_choices]  # type: ignore[attr-defined]
        if on_case:
            self.fields["next_status"].choices = [("", "(unchanged)"), *CaseStatus.choices]  # type: ignore[attr-defined]
        else:
            del self.fields["next_status"]


class SendAgainForm(forms.Form):
    checked = forms.BooleanField(label="I checked it did not arrive", required=False)
