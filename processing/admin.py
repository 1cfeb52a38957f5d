from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django.contrib import admin
from django.db.models import ForeignKey, QuerySet
from django.forms import ModelChoiceField, ModelForm
from django.http import HttpRequest

from mailboxes.admin_access import MAILBOX_FILTER, MailboxScopedMixin
from mailboxes.models import Mailbox

from .models import AgentSignature, Case, Lead
from .services.cases import case_number_allocate

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    # django-stubs makes the admin classes generic for the checker only: Django's are not
    # subscriptable (that would take django_stubs_ext.monkeypatch(), a runtime dependency).
    _LeadAdminBase = admin.ModelAdmin[Lead]
    _CaseAdminBase = admin.ModelAdmin[Case]
    _SignatureAdminBase = admin.ModelAdmin[AgentSignature]
else:
    _LeadAdminBase = _CaseAdminBase = _SignatureAdminBase = admin.ModelAdmin


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


@admin.register(AgentSignature)
class AgentSignatureAdmin(_SignatureAdminBase):
    """An agent's own signatures. Superusers see everyone's; anyone else only their own, for the
    mailboxes they may access (or for all of them), and can't write one in someone else's name."""

    list_display = ("user", "mailbox")
    list_select_related = ("user", "mailbox")

    def get_queryset(self, request: HttpRequest) -> QuerySet[AgentSignature]:
        signatures = super().get_queryset(request)
        if request.user.is_superuser:
            return signatures
        return signatures.filter(user=cast("User", request.user))  # the admin is behind a login

    def get_exclude(self, request: HttpRequest, obj: AgentSignature | None = None) -> Any:
        return () if request.user.is_superuser else ("user",)

    def formfield_for_foreignkey(
        self, db_field: ForeignKey[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> ModelChoiceField[Any] | None:
        if db_field.name == "mailbox":
            kwargs["queryset"] = Mailbox.objects.accessible_to(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(
        self, request: HttpRequest, obj: AgentSignature, form: ModelForm[AgentSignature], change: bool
    ) -> None:
        if not request.user.is_superuser:
            obj.user = cast("User", request.user)
        super().save_model(request, obj, form, change)
