"""The admin's OAuth2 connect flow: the connections inline on the mailbox page, Connect, callback.

"Connect with Microsoft / Google / <provider>" runs the authorization-code flow with PKCE S256
(RFC 7636) from the admin's browser. The state (RFC 6749 §10.12) and the code verifier are kept
in the admin's session, bound to the connection and its mailbox, and used once: the callback
pops them, so a replayed or forged answer is refused. The redirect URI is one fixed URL for every
mailbox (what is registered with the provider): /admin/mailboxes/mailbox/oauth/callback/, or
MAILHUB_OAUTH_REDIRECT_URI. Tokens are stored encrypted and never rendered back; a failed or
revoked connection shows its reason and a Reconnect button, never a 500 (Zammad#3292).
Only admins who may change the mailbox can connect it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from mailboxes.encryption import CIPHERTEXT_PREFIX
from mailboxes.models import Mailbox
from mailboxes.oauth_models import GrantStatus, OAuthFlow, OAuthGrant, OAuthProvider
from mailboxes.services.oauth import (
    OAuthGrantError,
    oauth_authorization_start,
    oauth_grant_connect,
    oauth_grant_connect_application,
)

if TYPE_CHECKING:
    _GrantFormBase = forms.ModelForm[OAuthGrant]
    _GrantInlineBase = admin.StackedInline[OAuthGrant, Mailbox]
    _MailboxAdmin = admin.ModelAdmin[Mailbox]
else:
    _GrantFormBase = forms.ModelForm
    _GrantInlineBase = admin.StackedInline
    _MailboxAdmin = admin.ModelAdmin

logger = logging.getLogger("mailhub.oauth")

SESSION_KEY = "mailhub_oauth_pending"
# A sign-in takes a minute; an answer arriving later than this is refused (press Connect again).
PENDING_SECONDS = 15 * 60
MAX_PENDING = 5
UNKNOWN_STATE = (
    "This sign-in answer is unknown, already used or expired (or from another browser session): "
    "press Connect again."
)


class OAuthGrantForm(_GrantFormBase):
    """The client secret is write-only: never rendered back; blank keeps the stored one."""

    client_secret = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted. Leave blank to keep the current one (or to use "
        "MAILHUB_OAUTH_<PROVIDER>_CLIENT_SECRET).",
    )

    class Meta:
        model = OAuthGrant
        fields = (
            "purpose",
            "provider",
            "flow",
            "tenant",
            "authorization_endpoint",
            "token_endpoint",
            "issuer",
            "scopes",
            "client_id",
            "client_secret",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial["client_secret"] = ""

    def clean_client_secret(self) -> str:
        value: str = self.cleaned_data.get("client_secret") or ""
        if value.startswith(CIPHERTEXT_PREFIX):
            raise forms.ValidationError(f"A secret can't start with {CIPHERTEXT_PREFIX!r}.")
        return value

    def _post_clean(self) -> None:
        if not self.cleaned_data.get("client_secret") and self.instance.pk:
            self.cleaned_data["client_secret"] = self.instance.client_secret
        super()._post_clean()  # type: ignore[misc]  # Django's hook, absent from django-stubs


class OAuthGrantInline(_GrantInlineBase):
    model = OAuthGrant
    form = OAuthGrantForm
    extra = 0
    max_num = 3  # one per purpose (a unique constraint)
    verbose_name = "OAuth2 connection"
    readonly_fields = ("connection", "account", "last_error", "refreshed_at")
    fields = (
        ("purpose", "provider", "flow"),
        "tenant",
        ("authorization_endpoint", "token_endpoint"),
        ("issuer", "scopes"),
        ("client_id", "client_secret"),
        *readonly_fields,
    )

    @admin.display(description="connection")
    def connection(self, grant: OAuthGrant) -> str:
        if not grant.pk:
            return "Save the mailbox, then connect."
        url = reverse("admin:mailboxes_oauth_connect", args=[grant.pk])
        provider = {OAuthProvider.GENERIC: "the provider"}.get(
            OAuthProvider(grant.provider), OAuthProvider(grant.provider).label.split(" (")[0]
        )
        if grant.flow == OAuthFlow.CLIENT_CREDENTIALS:
            label = "Get a token with the application permission"
        elif grant.status == GrantStatus.NOT_CONNECTED:
            label = f"Connect with {provider}"
        else:
            label = f"Reconnect with {provider}"
        return format_html(
            '<strong>{}</strong> <a class="button" href="{}">{}</a>', grant.get_status_display(), url, label
        )


def _redirect_uri(request: HttpRequest) -> str:
    configured: str = settings.MAILHUB_OAUTH_REDIRECT_URI
    return configured or request.build_absolute_uri(reverse("admin:mailboxes_oauth_callback"))


def _grant_for_change(model_admin: _MailboxAdmin, request: HttpRequest, grant_id: int) -> OAuthGrant:
    """The grant, if the user may change its mailbox (the admin's scoped queryset decides)."""
    grant = OAuthGrant.objects.filter(pk=grant_id).select_related("mailbox").first()
    if grant is None or not model_admin.get_queryset(request).filter(pk=grant.mailbox_id).exists():
        raise PermissionDenied
    if not model_admin.has_change_permission(request, grant.mailbox):
        raise PermissionDenied
    return grant


def _mailbox_page(mailbox_id: int) -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse("admin:mailboxes_mailbox_change", args=[mailbox_id]))


def oauth_connect_view(model_admin: _MailboxAdmin, request: HttpRequest, grant_id: int) -> HttpResponse:
    grant = _grant_for_change(model_admin, request, grant_id)
    try:
        if grant.flow == OAuthFlow.CLIENT_CREDENTIALS:
            grant = oauth_grant_connect_application(grant_id=grant.pk)
            messages.success(
                request, f"{grant.mailbox.label}: token obtained with the application permission."
            )
            return _mailbox_page(grant.mailbox_id)
        start = oauth_authorization_start(grant=grant, redirect_uri=_redirect_uri(request))
    except OAuthGrantError as exc:
        messages.error(request, f"{grant.mailbox.label}: {exc}")
        return _mailbox_page(grant.mailbox_id)
    now = time.time()
    pending = {
        state: entry
        for state, entry in request.session.get(SESSION_KEY, {}).items()
        if now - entry["at"] < PENDING_SECONDS
    }
    pending[start.state] = {
        "grant": grant.pk,
        "mailbox": grant.mailbox_id,
        "verifier": start.code_verifier,
        "redirect_uri": _redirect_uri(request),
        "at": now,
    }
    request.session[SESSION_KEY] = dict(
        sorted(pending.items(), key=lambda item: item[1]["at"])[-MAX_PENDING:]
    )
    return HttpResponseRedirect(start.url)


def oauth_callback_view(model_admin: _MailboxAdmin, request: HttpRequest) -> HttpResponse:
    pending = dict(request.session.get(SESSION_KEY, {}))
    entry = pending.pop(request.GET.get("state", ""), None)
    request.session[SESSION_KEY] = pending  # used once, whatever comes next
    if entry is None or time.time() - entry["at"] >= PENDING_SECONDS:
        messages.error(request, UNKNOWN_STATE)
        return HttpResponseRedirect(reverse("admin:mailboxes_mailbox_changelist"))
    grant = _grant_for_change(model_admin, request, entry["grant"])
    if grant.mailbox_id != entry["mailbox"]:
        raise PermissionDenied
    if "error" in request.GET:
        # RFC 6749 §4.1.2.1: the user declined, or the provider refused the request.
        error = " ".join(request.GET.get("error", "")[:60].split())
        description = " ".join(request.GET.get("error_description", "")[:300].split())
        reason = (
            f"sign-in refused by the identity provider ({error}{': ' + description if description else ''})"
        )
        OAuthGrant.objects.filter(pk=grant.pk).update(last_error=reason)
        messages.error(request, f"{grant.mailbox.label}: {reason}")
        return _mailbox_page(grant.mailbox_id)
    try:
        grant = oauth_grant_connect(
            grant_id=grant.pk,
            code=request.GET.get("code", "")[:2000],
            code_verifier=entry["verifier"],
            redirect_uri=entry["redirect_uri"],
        )
    except OAuthGrantError as exc:
        messages.error(request, f"{grant.mailbox.label}: {exc}")
    except Exception as exc:  # noqa: BLE001 - the admin gets an answer, never a 500
        logger.error("OAuth2 connect of grant %s failed on our side: %s", grant.pk, type(exc).__name__)
        messages.error(
            request, f"{grant.mailbox.label}: connecting failed on our side ({type(exc).__name__})"
        )
    else:
        who = grant.account or "an account the provider did not name"
        messages.success(request, f"{grant.mailbox.label}: connected as {who}.")
    return _mailbox_page(grant.mailbox_id)
