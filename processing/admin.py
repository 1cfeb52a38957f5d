from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin
from django.forms import ModelForm
from django.http import HttpRequest

from mailboxes.admin_access import MAILBOX_FILTER, MailboxScopedMixin

from .models import Case, Lead
from .services.cases import case_number_allocate

if TYPE_CHECKING:
    # django-stubs makes the admin classes generic for the checker only: Django's are not
    # subscriptable (that would take django_stubs_ext.monkeypatch(), a runtime dependency).
    _LeadAdminBase = admin.ModelAdmin[Lead]
    _CaseAdminBase = admin.ModelAdmin[Case]
else:
    _LeadAdminBase = _CaseAdminBase = admin.ModelAdmin


@admin.register(Lead)
class LeadAdmin(MailboxScopedMixin, _LeadAdminBase):
    list_display = ("name", "email", "status", "mailbox", "owner", "created_at")
    list_filter = ("status", ("mailbox", MAILBOX_FILTER), "owner")
    search_fields = ("name", "email", "subject", "notes")
    list_select_related = ("mailbox", "owner")
    date_hierarchy = "created_at"


@admin.register(Case)
class CaseAdmin(MailboxScopedMixin, _CaseAdminBase):
    list_display = ("reference", "subject", "status", "priority", "assignee", "mailbox", "created_at")
    list_filter = ("status", "priority", ("mailbox", MAILBOX_FILTER), "assignee")
    search_fields = ("number", "subject", "description", "reporter_address", "reporter_name")
    list_select_related = ("mailbox", "assignee")
    date_hierarchy = "created_at"
    readonly_fields = ("number", "created_at", "updated_at", "resolved_at")
    raw_id_fields = ("previous_case",)

    @admin.display(description="number", ordering="number")
    def reference(self, case: Case) -> str:
        return case.reference

    def save_model(self, request: HttpRequest, obj: Case, form: ModelForm[Case], change: bool) -> None:
        # A case added by hand gets its number like any other (the number is not editable).
        if change:
            super().save_model(request, obj, form, change)
        else:
            case_number_allocate(case=obj)
