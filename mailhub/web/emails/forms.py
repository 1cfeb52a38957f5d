"""The form of My Emails' grid: its GET parameters, read leniently."""

from __future__ import annotations

from typing import Any

from django import forms

from .grid import SORT_KEYS, EmailGridQuery, Relation

PAGE_SIZES = (25, 50, 100)
DEFAULT_PAGE_SIZE = 50


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

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        start, end = cleaned.get("received_from"), cleaned.get("received_until")
        if start and end and start > end:
            # Neither bound is trusted then: the whole range is ignored, and the reader told why.
            self.add_error(None, "The date range ends before it starts: it was ignored.")
            cleaned.pop("received_from")
            cleaned.pop("received_until")
        return cleaned

    def value(self, name: str, default: Any = None) -> Any:
        """A cleaned parameter, or `default` if it is missing, empty or invalid."""
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
