"""OAuth2 grants of the mailboxes: how a mailbox gets the access tokens its IMAP / SMTP logins use.

A model module of its own (imported by mailboxes.models, so Django registers it) because it is
one topic: the provider facts an admin enters, and the tokens the connect flow and the refreshes
store. The tokens live in their own row, not on Mailbox, so that a refresh locks only this row
(never the mailbox row the poll lease and the cursor are written to) and so that one grant can
serve both protocols (`purpose` SHARED) or each its own.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from .encryption import EncryptedTextField


class AuthMethod(models.TextChoices):
    PASSWORD = "password", "Password"
    OAUTH2 = "oauth2", "OAuth2 (Microsoft 365, Google, other provider)"


class OAuthProvider(models.TextChoices):
    MICROSOFT = "microsoft", "Microsoft 365 (Entra ID)"
    GOOGLE = "google", "Google Workspace / Gmail"
    GENERIC = "generic", "Other OAuth2 / OpenID provider"


class OAuthFlow(models.TextChoices):
    # A person signs in once (authorization code with PKCE, RFC 6749 §4.1 + RFC 7636); the
    # refresh token keeps it working.
    AUTHORIZATION_CODE = "authorization_code", "Delegated: an admin signs in as the mailbox"
    # RFC 6749 §4.4: the application's own identity, no person and no refresh token (Microsoft's
    # application permission for shared mailboxes; the tenant admin grants it to the mailbox).
    CLIENT_CREDENTIALS = "client_credentials", "Application permission (client credentials, Microsoft)"


class GrantPurpose(models.TextChoices):
    SHARED = "shared", "IMAP and SMTP"
    IMAP = "imap", "IMAP only"
    SMTP = "smtp", "SMTP only"


class GrantStatus(models.TextChoices):
    NOT_CONNECTED = "not_connected", "Not connected yet"
    CONNECTED = "connected", "Connected"
    # Permanent until an admin reconnects: the refresh token was revoked, expired or reused
    # (invalid_grant), the client was refused, or the mail server refused a fresh token. No
    # request goes to the identity provider in this state (no retry storm).
    NEEDS_RECONNECT = "needs_reconnect", "Needs to be reconnected"


# Microsoft's multi-tenant aliases: a refresh there is not bound to the mailbox's directory (and
# a token of another tenant's account would do). Only the tenant's own endpoint is used.
MICROSOFT_ALIAS_TENANTS = frozenset({"common", "organizations", "consumers"})
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,253}")


class OAuthGrant(models.Model):
    mailbox = models.ForeignKey("mailboxes.Mailbox", on_delete=models.CASCADE, related_name="oauth_grants")
    purpose = models.CharField(max_length=10, choices=GrantPurpose.choices, default=GrantPurpose.SHARED)
    provider = models.CharField(max_length=10, choices=OAuthProvider.choices, default=OAuthProvider.MICROSOFT)
    flow = models.CharField(max_length=20, choices=OAuthFlow.choices, default=OAuthFlow.AUTHORIZATION_CODE)
    tenant = models.CharField(
        "tenant id",
        max_length=255,
        blank=True,
        help_text="Microsoft: the directory (tenant) id or its domain, e.g. contoso.onmicrosoft.com. "
        "Never 'common'.",
    )
    authorization_endpoint = models.URLField(max_length=500, blank=True, help_text="Other provider only.")
    token_endpoint = models.URLField(max_length=500, blank=True, help_text="Other provider only.")
    issuer = models.CharField(
        max_length=500,
        blank=True,
        help_text="Other provider: the expected `iss` of its tokens; a token of another issuer is "
        "refused with a clear error. Empty: not checked.",
    )
    scopes = models.CharField(
        max_length=500,
        blank=True,
        help_text="Space-separated. Empty: the provider's mail scopes (Microsoft: offline_access "
        "IMAP.AccessAsUser.All SMTP.Send; Google: https://mail.google.com/).",
    )
    client_id = models.CharField(
        max_length=255,
        blank=True,
        help_text="Empty: MAILHUB_OAUTH_<PROVIDER>_CLIENT_ID from the environment.",
    )
    client_secret = EncryptedTextField(blank=True, default="")

    status = models.CharField(
        max_length=20, choices=GrantStatus.choices, default=GrantStatus.NOT_CONNECTED, editable=False
    )
    account = models.CharField("connected account", max_length=320, blank=True, editable=False)
    access_token = EncryptedTextField(blank=True, default="", editable=False)
    access_token_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    refresh_token = EncryptedTextField(blank=True, default="", editable=False)
    # The generation of the tokens: +1 at every connect and refresh. A worker whose token the
    # server refused asks for a refresh "unless the generation moved on": if another worker
    # refreshed meanwhile, it uses that token instead of refreshing again.
    version = models.PositiveIntegerField(default=0, editable=False)
    last_error = models.TextField(blank=True, editable=False)
    connected_at = models.DateTimeField(null=True, blank=True, editable=False)
    refreshed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "OAuth2 connection"
        constraints = [
            models.UniqueConstraint(fields=["mailbox", "purpose"], name="oauth_grant_unique_mailbox_purpose"),
            models.CheckConstraint(
                condition=~Q(provider=OAuthProvider.MICROSOFT, tenant__in=sorted(MICROSOFT_ALIAS_TENANTS)),
                name="oauth_grant_microsoft_own_tenant",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_provider_display()} ({self.get_purpose_display()}): {self.get_status_display()}"

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.provider == OAuthProvider.MICROSOFT:
            if self.tenant.lower() in MICROSOFT_ALIAS_TENANTS:
                errors["tenant"] = (
                    f"'{self.tenant}' is not a tenant: give the directory (tenant) id or domain, so "
                    "that tokens are issued and refreshed by the mailbox's own directory."
                )
            elif not _TENANT.fullmatch(self.tenant):
                errors["tenant"] = (
                    "Give the directory (tenant) id, e.g. 72f988bf-86f1-41af-91ab-2d7cd011db47."
                )
        elif self.flow == OAuthFlow.CLIENT_CREDENTIALS:
            errors["flow"] = "The application permission (client credentials) is for Microsoft only."
        if self.provider == OAuthProvider.GENERIC:
            for name in ("authorization_endpoint", "token_endpoint"):
                if not getattr(self, name) and not (
                    name == "authorization_endpoint" and self.flow == OAuthFlow.CLIENT_CREDENTIALS
                ):
                    errors[name] = "Required for another provider."
        if errors:
            raise ValidationError(errors)
