"""The admin pages that join several apps, composed here at the top of the layers.

Each app's admin.py registers what belongs to it alone (autoresponse: rules, conditions,
templates; processing: leads, cases) and may import only the apps below it, so a page made of
several apps' parts is put together here:

- Mailbox: the mailboxes model with its auto-response rules inline (autoresponse), the state and
  backlog columns (`mailhub.status`, the selector `mailhub_status` uses) and the connection test;
- Email: with its attachments and auto-replies inline, and the conversion actions (processing);
- Attachment: registered here with the other mailboxes models (mailboxes has no admin.py);
- AutoReply: autoresponse's `AutoReplyAdmin` with the resend action: it enqueues the send task
  (`mailhub.tasks`), which autoresponse can't import.
- OutboundMessage: staff's answers, read-only, with "Send again" (it enqueues the send task).

Every page, here and in the apps, shows only the rows of the user's mailboxes
(`MailboxScopedMixin`, mailboxes/admin_access.py).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from autoresponse.admin import AutoReplyAdmin, AutoReplyInline, AutoResponseRuleInline
from autoresponse.models import AutoReply
from autoresponse.services import auto_replies_resend_by_hand
from mailboxes.admin_access import MAILBOX_FILTER, MailboxScopedMixin
from mailboxes.encryption import CIPHERTEXT_PREFIX
from mailboxes.models import Attachment, Email, HistoryImport, Mailbox, OutboundMessage, ProcessingStatus
from mailboxes.oauth_models import AuthMethod
from mailboxes.services import mailbox_test_connection
from mailboxes.services.oauth import mailbox_oauth_setup_warnings
from mailboxes.services.sending import outbound_send_again
from processing.services import ConversionRefused, email_convert_to_case, email_convert_to_lead

from .admin_oauth import OAuthGrantInline, oauth_callback_view, oauth_connect_view
from .status import mailbox_state, mailboxes_annotate_status
from .tasks import enqueue_after_commit, send_auto_reply, send_outbound

if TYPE_CHECKING:
    from .status import AnnotatedMailbox

    # django-stubs makes the admin and form classes generic for the checker only: Django's are
    # not subscriptable (that would take django_stubs_ext.monkeypatch(), a runtime dependency).
    _MailboxFormBase = forms.ModelForm[Mailbox]
    _MailboxAdminBase = admin.ModelAdmin[Mailbox]
    _EmailAdminBase = admin.ModelAdmin[Email]
    _AttachmentAdminBase = admin.ModelAdmin[Attachment]
    _AttachmentInlineBase = admin.TabularInline[Attachment, Email]
    _OutboundAdminBase = admin.ModelAdmin[OutboundMessage]
else:
    _MailboxFormBase = forms.ModelForm
    _MailboxAdminBase = _EmailAdminBase = _AttachmentAdminBase = _OutboundAdminBase = admin.ModelAdmin
    _AttachmentInlineBase = admin.TabularInline


# --- Mailbox -------------------------------------------------------------------------------

SECRET_FIELDS = ("imap_password", "smtp_password")
# A stored password is only ever sent to the server it was entered for: changing any of these
# while leaving the password blank would send it to the new one (an editor could read it by
# pointing the mailbox at a server of theirs and pressing Test connection).
SERVER_FIELDS = {
    "imap_password": ("imap_host", "imap_port", "imap_security", "imap_username"),
    "smtp_password": ("smtp_host", "smtp_port", "smtp_security", "smtp_username"),
}
# The auth field of each password: with OAuth2 the password is never sent (an access token is).
AUTH_FIELDS = {"imap_password": "imap_auth", "smtp_password": "smtp_auth"}
SERVER_CHANGED = (
    "Enter the password again: the server changed (host, port, security or username), and the "
    "stored password is only sent to the server it was entered for."
)


def _secret_field(label: str) -> forms.CharField:
    """A write-only password field: never rendered back, blank keeps the stored value."""
    return forms.CharField(
        label=label,
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted. Leave blank to keep the current password.",
    )


class MailboxAdminForm(_MailboxFormBase):
    """Secrets are write-only: never rendered back; a blank field keeps the stored value."""

    imap_password = _secret_field("IMAP password")
    smtp_password = _secret_field("SMTP password")

    class Meta:
        model = Mailbox
        fields = "__all__"  # the admin's fieldsets choose what is shown

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in SECRET_FIELDS:
            self.initial[name] = ""
        self._forget: set[str] = set()

    def _clean_secret(self, name: str) -> str:
        value = self.cleaned_data.get(name) or ""
        if value.startswith(CIPHERTEXT_PREFIX):
            # It would be read as stored ciphertext (the column's format, see EncryptedTextField).
            raise forms.ValidationError(f"A password can't start with {CIPHERTEXT_PREFIX!r}.")
        return value

    def clean_imap_password(self) -> str:
        return self._clean_secret("imap_password")

    def clean_smtp_password(self) -> str:
        return self._clean_secret("smtp_password")

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data  # what ModelForm.clean returns
        if cleaned.get("history_import") == HistoryImport.SINCE and not cleaned.get("history_since"):
            self.add_error("history_since", "Give the date from which existing messages are imported.")
        if self.instance.pk:
            for secret, server_fields in SERVER_FIELDS.items():
                if cleaned.get(secret) or not getattr(self.instance, secret):
                    continue  # a new password, or none stored: nothing old can leak
                # Compared with the instance as loaded (construct_instance runs after clean).
                if any(
                    name in cleaned and cleaned[name] != getattr(self.instance, name)
                    for name in server_fields
                ):
                    if cleaned.get(AUTH_FIELDS[secret]) == AuthMethod.OAUTH2:
                        # No password is used with OAuth2, so none is asked for; but the stored
                        # one was entered for the old server: it is forgotten, so that switching
                        # back to the password later can't send it to this new server.
                        self._forget.add(secret)
                    else:
                        self.add_error(secret, SERVER_CHANGED)
        return cleaned

    def _post_clean(self) -> None:
        # A blank secret means "unchanged": keep the stored value (still encrypted: the form never
        # needs a key, so a mailbox whose key was removed can still be edited and fixed).
        for name in SECRET_FIELDS:
            if name in self._forget:
                self.cleaned_data[name] = ""
            elif not self.cleaned_data.get(name) and self.instance.pk:
                self.cleaned_data[name] = getattr(self.instance, name)
        super()._post_clean()  # type: ignore[misc]  # Django's hook, absent from django-stubs


@admin.register(Mailbox)
class MailboxAdmin(MailboxScopedMixin, _MailboxAdminBase):
    form = MailboxAdminForm
    list_display = (
        "label",
        "email",
        "processing_action",
        "is_active",
        "state",
        "backlog",
        "answers_failed",
        "answers_uncertain",
        "last_polled_at",
        "last_success_at",
        "consecutive_failures",
        "short_last_error",
    )
    list_filter = ("is_active", "processing_action", "imap_security")
    search_fields = ("label", "email", "imap_host", "imap_username")
    filter_horizontal = ("authorized_users", "authorized_groups")
    inlines = [AutoResponseRuleInline, OAuthGrantInline]
    actions = ["test_connection"]
    readonly_fields = (
        "imap_uidvalidity",
        "imap_last_uid",
        "last_polled_at",
        "last_success_at",
        "consecutive_failures",
        "next_poll_at",
        "last_error",
    )
    fieldsets = (
        (None, {"fields": ("label", "email", "is_active")}),
        (
            "IMAP (incoming)",
            {
                "fields": (
                    ("imap_host", "imap_port", "imap_security"),
                    ("imap_username", "imap_auth", "imap_password"),
                    "imap_folder",
                    "poll_interval",
                    ("history_import", "history_since"),
                )
            },
        ),
        (
            "SMTP (auto-responses and staff's answers)",
            {
                "fields": (
                    ("smtp_host", "smtp_port", "smtp_security"),
                    ("smtp_username", "smtp_auth", "smtp_password"),
                )
            },
        ),
        ("Answers", {"fields": ("sender_name", "signature", "imap_sent_folder")}),
        ("Access", {"fields": ("authorized_users", "authorized_groups")}),
        (
            "Processing",
            {
                "fields": (
                    "processing_action",
                    "default_owner",
                    ("default_case_assignee", "default_case_status", "default_case_priority"),
                    "lead_join_open_lead",
                    "reopen_resolved_cases",
                )
            },
        ),
        ("Sync state", {"classes": ("collapse",), "fields": readonly_fields}),
    )

    # The POST carries the passwords (and the OAuth2 client secrets, whose inline names vary) and
    # the form's frames hold them: Django's error report shows none of the POST parameters nor
    # (every frame below the view is reported without its variables) the frames.
    @method_decorator(sensitive_post_parameters())
    @method_decorator(sensitive_variables())
    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        return super().changeform_view(request, object_id, form_url, extra_context)

    def get_urls(self) -> list[URLPattern]:
        # Before the default ones: "<path:object_id>/" would take "oauth/...".
        return [
            path(
                "oauth/<int:grant_id>/connect/",
                self.admin_site.admin_view(partial(oauth_connect_view, self)),
                name="mailboxes_oauth_connect",
            ),
            path(
                "oauth/callback/",
                self.admin_site.admin_view(partial(oauth_callback_view, self)),
                name="mailboxes_oauth_callback",
            ),
            *super().get_urls(),
        ]

    def save_model(self, request: HttpRequest, obj: Mailbox, form: MailboxAdminForm, change: bool) -> None:
        # New IMAP settings or password (an admin fixing a failing mailbox): poll at the next
        # dispatch rather than when the backoff of the old failures ends.
        if change and any(
            name in form.changed_data
            for name in ("imap_password", "imap_folder", "imap_auth", *SERVER_FIELDS["imap_password"])
        ):
            obj.next_poll_at = None
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        # After the inlines: a connection added on the same page counts. A warning, not a refusal:
        # the connect flow needs the connection saved first (Connect appears after the save), and
        # a refusal would also block other fixes (deactivating the mailbox); the polls and sends
        # fail meanwhile with a permanent error that says the same.
        for warning in mailbox_oauth_setup_warnings(mailbox=form.instance):
            self.message_user(request, f"{form.instance.label}: {warning}", messages.WARNING)

    def get_queryset(self, request: HttpRequest) -> QuerySet[AnnotatedMailbox]:
        # The state and backlog columns come from subqueries of the page's one query, the same
        # selector `mailhub_status` uses: no query per row.
        return mailboxes_annotate_status(super().get_queryset(request))

    @admin.display(description="state")
    def state(self, mailbox: Mailbox) -> str:
        return mailbox_state(mailbox)

    @admin.display(description="backlog", ordering="status_backlog")
    def backlog(self, mailbox: AnnotatedMailbox) -> int:
        return mailbox.status_backlog

    @admin.display(description="answers failed", ordering="status_outbound_failed")
    def answers_failed(self, mailbox: AnnotatedMailbox) -> int:
        return mailbox.status_outbound_failed

    @admin.display(description="answers of unknown outcome", ordering="status_outbound_uncertain")
    def answers_uncertain(self, mailbox: AnnotatedMailbox) -> int:
        return mailbox.status_outbound_uncertain

    @admin.display(description="last error")
    def short_last_error(self, mailbox: Mailbox) -> str:
        return (mailbox.last_error[:80] + "…") if len(mailbox.last_error) > 80 else mailbox.last_error

    # It sends the stored passwords to the configured servers: for those who may change the
    # mailbox, not for viewers.
    @admin.action(description="Test connection (IMAP login + folder, SMTP)", permissions=["change"])
    def test_connection(self, request: HttpRequest, queryset: QuerySet[Mailbox]) -> None:
        for mailbox in queryset:
            for check in mailbox_test_connection(mailbox=mailbox):
                level = messages.SUCCESS if check.ok else messages.ERROR
                self.message_user(request, f"{mailbox.label}: {check.message}", level)


# --- Email and its attachments ---------------------------------------------------------------


class _Convert(Protocol):
    """`email_convert_to_case` or `email_convert_to_lead`."""

    def __call__(self, *, email_id: int) -> object: ...


class AttachmentInline(MailboxScopedMixin, _AttachmentInlineBase):
    model = Attachment
    extra = 0
    can_delete = False
    fields = ("filename", "content_type", "size", "is_inline", "content_id", "file")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Email | None = None) -> bool:
        return False


@admin.register(Email)
class EmailAdmin(MailboxScopedMixin, _EmailAdminBase):
    list_display = (
        "subject",
        "from_address",
        "mailbox",
        "received_at",
        "has_attachments",
        "is_history",
        "has_parse_problem",
        "lead",
        "case",
    )
    list_filter = (
        ("mailbox", MAILBOX_FILTER),
        "processing_status",
        "has_attachments",
        "is_history",
        "received_at",
    )
    search_fields = ("subject", "from_address", "from_name", "message_id")
    list_select_related = ("mailbox", "lead", "case")
    date_hierarchy = "received_at"
    inlines = [AttachmentInline, AutoReplyInline]
    actions = ["convert_to_case", "convert_to_lead", "retry_processing"]
    readonly_fields = [
        field.name
        for field in Email._meta.get_fields()
        if field.concrete and field.name not in ("lead", "case")
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # emails come from IMAP only

    @admin.display(boolean=True, description="parse problem")
    def has_parse_problem(self, email: Email) -> bool:
        return bool(email.parse_problem)

    # State-changing actions need the change permission (a viewer must not create cases, nor
    # reset processing, which runs the auto-replies again).
    @admin.action(description="Convert to case (no-op for emails already in a case)", permissions=["change"])
    def convert_to_case(self, request: HttpRequest, queryset: QuerySet[Email]) -> None:
        self._convert(request, queryset, email_convert_to_case, "case")

    @admin.action(description="Convert to lead (no-op for emails already in a lead)", permissions=["change"])
    def convert_to_lead(self, request: HttpRequest, queryset: QuerySet[Email]) -> None:
        self._convert(request, queryset, email_convert_to_lead, "lead")

    def _convert(
        self,
        request: HttpRequest,
        queryset: QuerySet[Email],
        convert: _Convert,
        what: str,
    ) -> None:
        done, refused = 0, []
        for email_id in queryset.values_list("pk", flat=True):
            try:
                convert(email_id=email_id)
                done += 1
            except ConversionRefused as exc:
                refused.append(f"email {email_id}: {exc}")
        self.message_user(request, f"{done} email(s) are now in a {what}.", messages.SUCCESS)
        for message in refused:
            self.message_user(request, message, messages.WARNING)

    @admin.action(description="Retry processing of failed emails", permissions=["change"])
    def retry_processing(self, request: HttpRequest, queryset: QuerySet[Email]) -> None:
        count = queryset.filter(processing_status=ProcessingStatus.FAILED).update(
            processing_status=ProcessingStatus.PENDING, processing_attempts=0, processing_next_attempt_at=None
        )
        self.message_user(request, f"{count} failed email(s) will be processed at the next poll.")


@admin.register(Attachment)
class AttachmentAdmin(MailboxScopedMixin, _AttachmentAdminBase):
    list_display = ("filename", "content_type", "size", "is_inline", "email")
    list_filter = ("is_inline", "content_type")
    search_fields = ("filename", "email__subject")
    list_select_related = ("email",)
    readonly_fields = ("email", "filename", "content_type", "size", "file", "content_id", "is_inline")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


# --- Auto-replies ----------------------------------------------------------------------------


@admin.register(AutoReply)
class AutoReplyAdminWithActions(AutoReplyAdmin):
    actions = ["resend_by_hand"]

    @admin.action(
        description="Resend by hand (unknown outcome or failed: check it did not arrive first)",
        permissions=["change"],
    )
    def resend_by_hand(self, request: HttpRequest, queryset: QuerySet[AutoReply]) -> None:
        ids = auto_replies_resend_by_hand(
            auto_reply_ids=list(queryset.values_list("pk", flat=True)),
            requested_by=request.user.get_username(),
        )
        for auto_reply_id in ids:
            enqueue_after_commit(send_auto_reply, auto_reply_id)
        skipped = queryset.count() - len(ids)
        self.message_user(request, f"{len(ids)} auto-reply(ies) queued to be sent again.", messages.SUCCESS)
        if skipped:
            self.message_user(
                request,
                f"{skipped} skipped: only unknown-outcome or failed auto-replies with a message "
                "can be resent.",
                messages.WARNING,
            )


# --- Staff's answers -------------------------------------------------------------------------


@admin.register(OutboundMessage)
class OutboundMessageAdmin(MailboxScopedMixin, _OutboundAdminBase):
    """Read-only: an answer is written on the staff pages and its delivery is the services'.
    "Send again" is the one thing a person does here, after checking it did not arrive."""

    list_display = (
        "email",
        "mailbox",
        "status",
        "short_reason",
        "attempts",
        "sent_at",
        "sent_copy_status",
        "sent_by",
        "created_at",
    )
    list_filter = ("status", "sent_copy_status", ("email__mailbox", MAILBOX_FILTER))
    search_fields = ("email__subject", "email__message_id")
    list_select_related = ("email", "email__mailbox", "sent_by")
    actions = ["send_again"]
    fields = readonly_fields = (
        "email",
        "sent_by",
        "envelope_recipients",
        "bcc",
        "status",
        "reason",
        "attempts",
        "next_attempt_at",
        "claimed_at",
        "sent_at",
        "sent_copy_status",
        "sent_copy_error",
        "sent_copy_attempts",
        "sent_copy_next_attempt_at",
        "sent_copy_claimed_at",
        "submission_key",
        "created_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: OutboundMessage | None = None) -> bool:
        return False

    @admin.display(description="mailbox", ordering="email__mailbox__label")
    def mailbox(self, outbound: OutboundMessage) -> Mailbox:
        return outbound.email.mailbox

    @admin.display(description="reason")
    def short_reason(self, outbound: OutboundMessage) -> str:
        return (outbound.reason[:80] + "…") if len(outbound.reason) > 80 else outbound.reason

    @admin.action(
        description="Send again (failed or unknown outcome: check it did not arrive first)",
        permissions=["change"],
    )
    def send_again(self, request: HttpRequest, queryset: QuerySet[OutboundMessage]) -> None:
        moved = [
            outbound_id
            for outbound_id in queryset.values_list("pk", flat=True)
            # The action's own label is the confirmation for uncertain ones ("check it did not
            # arrive first"), chosen explicitly from the actions list.
            if outbound_send_again(
                outbound_id=outbound_id, requested_by=request.user.get_username(), uncertain_checked=True
            )
        ]
        for outbound_id in moved:
            enqueue_after_commit(send_outbound, outbound_id)
        self.message_user(request, f"{len(moved)} answer(s) queued to be sent again.", messages.SUCCESS)
        skipped = queryset.count() - len(moved)
        if skipped:
            self.message_user(
                request,
                f"{skipped} skipped: only failed answers and those of unknown outcome can be sent again.",
                messages.WARNING,
            )
