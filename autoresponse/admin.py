from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils.html import format_html

from mailboxes.admin_access import MAILBOX_FILTER, MailboxScopedMixin, scoped_to_user

from .conditions import ConditionError, ConditionSpec, validate_condition
from .models import AutoReply, AutoResponseRule, EmailTemplate, RuleCondition
from .rendering import TemplateProblem, sample_context, template_render, template_validate

if TYPE_CHECKING:
    from mailboxes.models import Email, Mailbox

    # django-stubs makes the admin and form classes generic for the checker only: Django's are
    # not subscriptable (that would take django_stubs_ext.monkeypatch(), a runtime dependency).
    _RuleInlineBase = admin.TabularInline[AutoResponseRule, Mailbox]
    _RuleConditionFormBase = forms.ModelForm[RuleCondition]
    _RuleConditionInlineBase = admin.TabularInline[RuleCondition, AutoResponseRule]
    _RuleAdminBase = admin.ModelAdmin[AutoResponseRule]
    _EmailTemplateFormBase = forms.ModelForm[EmailTemplate]
    _EmailTemplateAdminBase = admin.ModelAdmin[EmailTemplate]
    _AutoReplyInlineBase = admin.TabularInline[AutoReply, Email]
    _AutoReplyAdminBase = admin.ModelAdmin[AutoReply]
else:
    _RuleInlineBase = _RuleConditionInlineBase = _AutoReplyInlineBase = admin.TabularInline
    _RuleConditionFormBase = _EmailTemplateFormBase = forms.ModelForm
    _RuleAdminBase = _EmailTemplateAdminBase = _AutoReplyAdminBase = admin.ModelAdmin


class AutoResponseRuleInline(MailboxScopedMixin, _RuleInlineBase):
    """Rules inside the mailbox page; their conditions are edited on the rule's own page."""

    model = AutoResponseRule
    extra = 0
    fields = ("order", "name", "is_active", "match", "template", "stop_after_match", "answer_replies")
    show_change_link = True


class RuleConditionForm(_RuleConditionFormBase):
    class Meta:
        model = RuleCondition
        fields = ("field", "header_name", "operator", "value")

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data  # what ModelForm.clean returns
        if self.errors:
            return cleaned
        spec = ConditionSpec(
            field=cleaned.get("field", ""),
            operator=cleaned.get("operator", ""),
            value=cleaned.get("value", ""),
            header_name=cleaned.get("header_name", ""),
        )
        try:
            validate_condition(spec)  # regexes are compiled and probed for catastrophic patterns here
        except ConditionError as exc:
            raise ValidationError(str(exc)) from exc
        return cleaned


class RuleConditionInline(MailboxScopedMixin, _RuleConditionInlineBase):
    model = RuleCondition
    form = RuleConditionForm
    extra = 1


@admin.register(AutoResponseRule)
class AutoResponseRuleAdmin(MailboxScopedMixin, _RuleAdminBase):
    list_display = ("name", "mailbox", "order", "is_active", "match", "template", "stop_after_match")
    list_filter = ("is_active", ("mailbox", MAILBOX_FILTER), "match")
    search_fields = ("name", "mailbox__label", "template__name")
    list_select_related = ("mailbox", "template")
    inlines = [RuleConditionInline]


class EmailTemplateForm(_EmailTemplateFormBase):
    class Meta:
        model = EmailTemplate
        fields = ("name", "subject", "text_body", "html_body")

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data  # what ModelForm.clean returns
        for name, html in (("subject", False), ("text_body", False), ("html_body", True)):
            source = cleaned.get(name) or ""
            try:
                template_validate(source, html=html)
            except TemplateProblem as exc:
                self.add_error(name, str(exc))
        return cleaned


@admin.register(EmailTemplate)
class EmailTemplateAdmin(_EmailTemplateAdminBase):
    form = EmailTemplateForm
    list_display = ("name", "subject", "updated_at")
    search_fields = ("name", "subject", "text_body")
    readonly_fields = ("preview",)
    fields = ("name", "subject", "text_body", "html_body", "preview")

    # Templates are shared by the rules of every mailbox (they hold no mailbox's data, only the
    # text of auto-replies): anyone with the view permission may read them, but changing or
    # deleting one changes what other mailboxes send, so a user may do it only when every rule
    # using it belongs to a mailbox they can access.
    def _used_elsewhere(self, request: HttpRequest, template: EmailTemplate | None) -> bool:
        if template is None or request.user.is_superuser:
            return False
        foreign = template.rules.exclude(
            pk__in=scoped_to_user(template.rules.all(), request.user).values("pk")
        )
        return foreign.exists()

    def has_change_permission(self, request: HttpRequest, obj: EmailTemplate | None = None) -> bool:
        return super().has_change_permission(request, obj) and not self._used_elsewhere(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: EmailTemplate | None = None) -> bool:
        return super().has_delete_permission(request, obj) and not self._used_elsewhere(request, obj)

    @admin.display(description="Preview (rendered against a sample email)")
    def preview(self, template: EmailTemplate) -> str:
        if not template.pk:
            return "Save the template to see a preview."
        context = sample_context()
        try:
            subject = template_render(template.subject, context, html=False)
            text = template_render(template.text_body, context, html=False)
            html = template_render(template.html_body, context, html=True) if template.html_body else ""
        except TemplateProblem as exc:
            return f"Cannot render: {exc}"
        # The HTML part is shown as escaped source, never as live markup inside the admin.
        return format_html(
            "<strong>Subject:</strong> {}<br><pre style='white-space:pre-wrap'>{}</pre>{}",
            subject,
            text,
            format_html("<strong>HTML source:</strong><pre style='white-space:pre-wrap'>{}</pre>", html)
            if html
            else "",
        )


class AutoReplyInline(MailboxScopedMixin, _AutoReplyInlineBase):
    """On the email's page: what was sent in answer, or why not."""

    model = AutoReply
    extra = 0
    can_delete = False
    fields = ("rule_name", "status", "reason", "recipient", "message_id", "sent_at", "attempts")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Email | None = None) -> bool:
        return False


class AutoReplyAdmin(MailboxScopedMixin, _AutoReplyAdminBase):
    """Registered by mailhub/admin.py, which adds the actions that enqueue work."""

    list_display = ("email", "rule_name", "status", "recipient", "short_reason", "sent_at", "created_at")
    list_filter = ("status", ("email__mailbox", MAILBOX_FILTER))
    search_fields = ("recipient", "reason", "message_id", "email__subject")
    list_select_related = ("email",)
    readonly_fields = [field.name for field in AutoReply._meta.concrete_fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="reason")
    def short_reason(self, reply: AutoReply) -> str:
        return reply.reason[:80]
