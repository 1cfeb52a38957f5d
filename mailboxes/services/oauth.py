"""OAuth2 access tokens of the mailboxes: connect, refresh under a row lock, give up cleanly.

Authlib's OAuth2Session does the protocol (RFC 6749 requests, PKCE RFC 7636, client
authentication, token parsing): a maintained client rather than hand-written HTTP, and the same
library the test identity provider uses for PKCE.

Tokens that keep working:
- `oauth_access_token` returns the stored access token while it is valid for more than
  MAILHUB_OAUTH_REFRESH_MARGIN seconds, else refreshes it.
- A refresh runs inside a transaction that first writes the grant row: the row lock (PostgreSQL;
  on SQLite the database write lock) makes a second worker wait, and the new tokens, the rotated
  refresh token first of all (Microsoft rotates it at every use and refuses the old one), are
  saved in that same transaction. The waiting worker then reads the fresh row and uses its
  access token: one refresh request, nothing lost.
- `invalid_grant` (revoked, expired, reused: RFC 6749 §5.2) and a refused client make the grant
  NEEDS_RECONNECT: permanent, no further request to the identity provider until an admin
  reconnects (no retry storm).
- `mailbox_run_imap` / `mailbox_run_smtp` are what the poll, the auto-replies and staff answers
  call: on an authentication failure with a token, ONE retry with a token refreshed for the
  purpose; a refused fresh token makes the grant NEEDS_RECONNECT too.
Tokens and secrets are never in a repr, a log line or an error message.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import requests
from authlib.integrations.requests_client import OAuth2Session, OAuthError  # type: ignore[import-untyped]
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from ..encryption import SecretDecryptionError
from ..imap import ImapError, ImapSettings
from ..models import Mailbox
from ..oauth_models import (
    MICROSOFT_ALIAS_TENANTS,
    AuthMethod,
    GrantPurpose,
    GrantStatus,
    OAuthFlow,
    OAuthGrant,
    OAuthProvider,
)
from ..smtp import SmtpError, SmtpSettings

logger = logging.getLogger("mailhub.oauth")

T = TypeVar("T")

DEFAULT_SCOPES = {
    # offline_access: a refresh token (Microsoft identity platform); the two mail scopes are the
    # delegated permissions of Exchange Online's IMAP and SMTP AUTH.
    OAuthProvider.MICROSOFT: "offline_access https://outlook.office.com/IMAP.AccessAsUser.All "
    "https://outlook.office.com/SMTP.Send",
    OAuthProvider.GOOGLE: "https://mail.google.com/",
    OAuthProvider.GENERIC: "openid email offline_access",
}
# Client credentials: the application's permissions on Exchange Online, as granted by the tenant.
MICROSOFT_APPLICATION_SCOPE = "https://outlook.office365.com/.default"
# Token endpoint errors (RFC 6749 §5.2, §4.1.2.1) that a later attempt may not see again.
TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error", "slow_down"})
# Claims that name the signed-in account: Google and OpenID (`email`), Microsoft v2 (`upn`,
# `preferred_username`) and v1 (`unique_name`) tokens.
ACCOUNT_CLAIMS = ("email", "upn", "preferred_username", "unique_name")
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

RECONNECT_HINT = "an admin presses Reconnect on the mailbox page"


class OAuthGrantError(Exception):
    """No usable access token. `permanent`: the grant needs an admin (reconnect or fix the
    settings); otherwise the identity provider could not be reached and a later try may work."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class AccessToken:
    value: str = field(repr=False)
    grant_id: int
    version: int  # the grant's token generation this token belongs to


@dataclass(frozen=True)
class ProviderEndpoints:
    authorization_endpoint: str
    token_endpoint: str
    scope: str
    client_id: str
    client_secret: str = field(repr=False)


# --- Provider facts ----------------------------------------------------------------------------


def oauth_grant_endpoints(*, grant: OAuthGrant) -> ProviderEndpoints:
    """The endpoints, scopes and client of a grant. Raises OAuthGrantError (permanent) when the
    configuration can't work: an alias tenant, no client id, an undecryptable secret."""
    provider = OAuthProvider(grant.provider)
    if provider is OAuthProvider.MICROSOFT:
        tenant = grant.tenant.strip()
        if not tenant or tenant.lower() in MICROSOFT_ALIAS_TENANTS:
            # Chatwoot#14325: a refresh at /common is not bound to the mailbox's directory.
            raise OAuthGrantError(
                "Microsoft OAuth2 needs the directory (tenant) id of the mailbox, not "
                f"{tenant or 'nothing'!r}: set it on the mailbox's OAuth2 connection",
                permanent=True,
            )
        base = f"{settings.MAILHUB_OAUTH_MICROSOFT_AUTHORITY.rstrip('/')}/{tenant}/oauth2/v2.0"
        authorization, token = f"{base}/authorize", f"{base}/token"
        env_id = settings.MAILHUB_OAUTH_MICROSOFT_CLIENT_ID
        env_secret = settings.MAILHUB_OAUTH_MICROSOFT_CLIENT_SECRET
    elif provider is OAuthProvider.GOOGLE:
        authorization = settings.MAILHUB_OAUTH_GOOGLE_AUTHORIZATION_URL
        token = settings.MAILHUB_OAUTH_GOOGLE_TOKEN_URL
        env_id = settings.MAILHUB_OAUTH_GOOGLE_CLIENT_ID
        env_secret = settings.MAILHUB_OAUTH_GOOGLE_CLIENT_SECRET
    else:
        authorization, token, env_id, env_secret = grant.authorization_endpoint, grant.token_endpoint, "", ""
        if not token:
            raise OAuthGrantError("the OAuth2 connection has no token endpoint", permanent=True)
    if grant.flow == OAuthFlow.CLIENT_CREDENTIALS:
        scope = grant.scopes or MICROSOFT_APPLICATION_SCOPE
    else:
        scope = grant.scopes or DEFAULT_SCOPES[provider]
    client_id = grant.client_id or env_id
    try:
        client_secret = grant.client_secret.reveal() if grant.client_id else env_secret
    except SecretDecryptionError as exc:
        raise OAuthGrantError(
            "the OAuth2 client secret can't be decrypted with MAILHUB_ENCRYPTION_KEYS: enter it again",
            permanent=True,
        ) from exc
    if not client_id:
        raise OAuthGrantError(
            f"no OAuth2 client id: set MAILHUB_OAUTH_{provider.name}_CLIENT_ID or one on the connection",
            permanent=True,
        )
    return ProviderEndpoints(authorization, token, scope, client_id, client_secret)


def _session(endpoints: ProviderEndpoints, **kwargs: Any) -> OAuth2Session:
    # client_secret_post (RFC 6749 §2.3.1): accepted by Microsoft, Google and most providers.
    return OAuth2Session(
        endpoints.client_id,
        endpoints.client_secret or None,
        scope=endpoints.scope,
        token_endpoint_auth_method="client_secret_post" if endpoints.client_secret else "none",
        **kwargs,
    )


def _unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified: the token came straight from the token endpoint over
    TLS (OpenID Connect Core §3.1.3.7 (6)), and the claims only name the account and tell a wrong
    issuer apart; the mail server verifies the access token. {} for an opaque token."""
    parts = token.split(".")
    if len(parts) != 3 or len(token) > 20_000:
        return {}
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _identity(grant: OAuthGrant, answer: dict[str, Any]) -> str:
    """The account the tokens are for; raises OAuthGrantError (permanent) for a token of another
    issuer or tenant than the connection's."""
    claims = _unverified_claims(str(answer.get("id_token") or "")) or _unverified_claims(
        str(answer.get("access_token") or "")
    )
    issuer = str(claims.get("iss", ""))
    if grant.provider == OAuthProvider.GENERIC and grant.issuer and claims and issuer != grant.issuer:
        raise OAuthGrantError(
            f"the identity provider issued a token of issuer {issuer[:200]!r}, expected "
            f"{grant.issuer!r}: wrong issuer (or wrong provider endpoints) on the connection",
            permanent=True,
        )
    tenant_id = str(claims.get("tid", ""))
    same_tenant = (
        not tenant_id or not _GUID.fullmatch(grant.tenant) or tenant_id.lower() == grant.tenant.lower()
    )
    if grant.provider == OAuthProvider.MICROSOFT and not same_tenant:
        raise OAuthGrantError(
            f"the token is of tenant {tenant_id[:40]!r}, not of the connection's tenant "
            f"{grant.tenant!r}: sign in with an account of the mailbox's directory",
            permanent=True,
        )
    for name in ACCOUNT_CLAIMS:
        if isinstance(claims.get(name), str) and claims[name]:
            return str(claims[name])[:320]
    return ""


def _provider_error(exc: Exception, *, what: str) -> OAuthGrantError:
    """An error of the token endpoint in words that quote no token nor secret."""
    if isinstance(exc, OAuthError):
        code = str(exc.error or "error")[:60]
        description = " ".join(str(exc.description or "").split())[:300]
        detail = f"{code}: {description}" if description else code
        if code == "invalid_grant":
            return OAuthGrantError(
                f"the identity provider refused the {what} ({detail}): the grant was revoked, "
                f"expired or already used; {RECONNECT_HINT}",
                permanent=True,
            )
        return OAuthGrantError(
            f"the identity provider refused the {what} ({detail})", permanent=code not in TRANSIENT_ERRORS
        )
    if isinstance(exc, requests.HTTPError) and exc.response is not None and exc.response.status_code < 500:
        return OAuthGrantError(
            f"the identity provider answered the {what} with HTTP {exc.response.status_code} "
            "(wrong token endpoint?)",
            permanent=True,
        )
    return OAuthGrantError(
        f"the identity provider could not be reached for the {what} ({type(exc).__name__})", permanent=False
    )


# --- The connect flow (authorization code with PKCE) ------------------------------------------


@dataclass(frozen=True)
class AuthorizationRequest:
    url: str
    state: str
    code_verifier: str = field(repr=False)


def oauth_authorization_start(*, grant: OAuthGrant, redirect_uri: str) -> AuthorizationRequest:
    """The provider's sign-in URL for `grant`, with a fresh state (RFC 6749 §10.12) and PKCE S256
    (RFC 7636 §4.2). The caller binds state and verifier to the admin's session."""
    endpoints = oauth_grant_endpoints(grant=grant)
    if grant.flow != OAuthFlow.AUTHORIZATION_CODE or not endpoints.authorization_endpoint:
        raise OAuthGrantError("this connection does not sign in (no authorization endpoint)", permanent=True)
    state, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(64)
    extra: dict[str, str] = {}
    if grant.provider == OAuthProvider.GOOGLE:
        # Google issues a refresh token only with offline access, and again only on consent.
        extra = {"access_type": "offline", "prompt": "consent"}
    elif grant.provider == OAuthProvider.MICROSOFT:
        extra = {"prompt": "select_account"}
    session = _session(endpoints, redirect_uri=redirect_uri, code_challenge_method="S256")
    url, _state = session.create_authorization_url(
        endpoints.authorization_endpoint, state=state, code_verifier=verifier, **extra
    )
    return AuthorizationRequest(url=url, state=state, code_verifier=verifier)


def oauth_grant_connect(*, grant_id: int, code: str, code_verifier: str, redirect_uri: str) -> OAuthGrant:
    """Exchange the authorization code and store the tokens (encrypted): the grant is connected
    again, its mailbox polled at the next dispatch. Raises OAuthGrantError (recorded on the grant
    as its last error)."""
    grant = OAuthGrant.objects.get(pk=grant_id)
    try:
        endpoints = oauth_grant_endpoints(grant=grant)
        session = _session(endpoints, redirect_uri=redirect_uri)
        try:
            answer = dict(
                session.fetch_token(
                    endpoints.token_endpoint,
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=code_verifier,
                    timeout=settings.MAILHUB_NETWORK_TIMEOUT,
                )
            )
        except (OAuthError, requests.RequestException, ValueError) as exc:
            raise _provider_error(exc, what="sign-in") from exc
        account = _identity(grant, answer)
        if not answer.get("refresh_token"):
            raise OAuthGrantError(
                "the identity provider gave no refresh token: the connection would stop within the "
                "hour (Microsoft: add the offline_access scope; Google: consent again)",
                permanent=True,
            )
    except OAuthGrantError as exc:
        OAuthGrant.objects.filter(pk=grant_id).update(last_error=str(exc))
        raise
    now = timezone.now()
    grant.access_token = str(answer["access_token"])
    grant.access_token_expires_at = _expiry(answer)
    grant.refresh_token = str(answer["refresh_token"])
    grant.account = account
    grant.status, grant.last_error = GrantStatus.CONNECTED, ""
    grant.connected_at = grant.refreshed_at = now
    with transaction.atomic():
        grant.save(
            update_fields=[
                "access_token",
                "access_token_expires_at",
                "refresh_token",
                "account",
                "status",
                "last_error",
                "connected_at",
                "refreshed_at",
            ]
        )
        OAuthGrant.objects.filter(pk=grant.pk).update(version=F("version") + 1)
        # Back to work at once rather than when the backoff of the failures ends.
        Mailbox.objects.filter(pk=grant.mailbox_id).update(next_poll_at=None)
    grant.refresh_from_db()
    return grant


def oauth_grant_connect_application(*, grant_id: int) -> OAuthGrant:
    """Client credentials (Microsoft application permission): forget an earlier failure and get
    a token now, so that the admin sees at once whether the tenant granted the permission.
    Raises OAuthGrantError."""
    OAuthGrant.objects.filter(pk=grant_id, flow=OAuthFlow.CLIENT_CREDENTIALS).update(
        status=GrantStatus.NOT_CONNECTED, access_token="", access_token_expires_at=None
    )
    oauth_access_token(grant_id=grant_id)
    grant = OAuthGrant.objects.select_related("mailbox").get(pk=grant_id)
    with transaction.atomic():
        OAuthGrant.objects.filter(pk=grant_id).update(connected_at=timezone.now())
        Mailbox.objects.filter(pk=grant.mailbox_id).update(next_poll_at=None)
    return grant


def _expiry(answer: dict[str, Any]) -> Any:
    try:
        seconds = int(answer.get("expires_in") or 3600)
    except (TypeError, ValueError):
        seconds = 3600
    return timezone.now() + timedelta(seconds=max(seconds, 0))


# --- Access tokens -------------------------------------------------------------------------------


def _usable(grant: OAuthGrant) -> bool:
    """Valid for more than the refresh margin, or than half its lifetime if that is shorter: a
    provider with 5-minute tokens must not get a refresh at every use."""
    if not grant.access_token or grant.access_token_expires_at is None:
        return False
    margin = timedelta(seconds=settings.MAILHUB_OAUTH_REFRESH_MARGIN)
    if grant.refreshed_at is not None:
        margin = max(min(margin, (grant.access_token_expires_at - grant.refreshed_at) / 2), timedelta(0))
    return grant.access_token_expires_at > timezone.now() + margin


def _needs_reconnect_error(grant: OAuthGrant) -> OAuthGrantError:
    return OAuthGrantError(
        f"OAuth2 connection ({grant.get_provider_display()}) needs to be renewed: "
        f"{grant.last_error or 'not connected yet'}; {RECONNECT_HINT}",
        permanent=True,
    )


def oauth_access_token(*, grant_id: int, refused_version: int | None = None) -> AccessToken:
    """A valid access token of the grant, refreshed when it expires soon (or when the mail
    server refused the token of generation `refused_version` and no other worker has replaced it
    since). Raises OAuthGrantError; a permanent one has also made the grant NEEDS_RECONNECT."""
    grant = OAuthGrant.objects.get(pk=grant_id)
    if grant.status != GrantStatus.CONNECTED and not (
        grant.flow == OAuthFlow.CLIENT_CREDENTIALS and grant.status == GrantStatus.NOT_CONNECTED
    ):
        raise _needs_reconnect_error(grant)  # no request to the identity provider
    if _usable(grant) and grant.version != refused_version:
        return _token_of(grant)
    failure: OAuthGrantError | None = None
    with transaction.atomic():
        # The write takes the row lock (SQLite: the database's) before the row is read again: a
        # second worker waits here until the first has committed the rotated refresh token.
        OAuthGrant.objects.filter(pk=grant_id).update(version=F("version"))
        grant = OAuthGrant.objects.select_for_update().get(pk=grant_id)
        if grant.status == GrantStatus.NEEDS_RECONNECT:
            raise _needs_reconnect_error(grant)
        if _usable(grant) and grant.version != refused_version:
            return _token_of(grant)  # another worker refreshed meanwhile
        try:
            answer = _request_tokens(grant)
            account = _identity(grant, answer)
        except OAuthGrantError as exc:
            failure = exc
            if exc.permanent:
                grant.status, grant.last_error = GrantStatus.NEEDS_RECONNECT, str(exc)
                grant.access_token, grant.access_token_expires_at = "", None
                grant.save(update_fields=["status", "last_error", "access_token", "access_token_expires_at"])
            else:
                OAuthGrant.objects.filter(pk=grant_id).update(last_error=str(exc))
        else:
            grant.access_token = str(answer["access_token"])
            grant.access_token_expires_at = _expiry(answer)
            if answer.get("refresh_token"):
                # Rotation: the old one is void from now on; saved before this transaction ends.
                grant.refresh_token = str(answer["refresh_token"])
            if account or grant.flow == OAuthFlow.CLIENT_CREDENTIALS:
                grant.account = account or grant.account
            grant.status, grant.last_error, grant.refreshed_at = GrantStatus.CONNECTED, "", timezone.now()
            grant.version += 1
            grant.save(
                update_fields=[
                    "access_token",
                    "access_token_expires_at",
                    "refresh_token",
                    "account",
                    "status",
                    "last_error",
                    "refreshed_at",
                    "version",
                ]
            )
    if failure is not None:
        logger.warning("OAuth2 grant %s: %s", grant_id, failure)
        if failure.permanent:
            raise _needs_reconnect_error(grant) from failure
        raise failure
    return _token_of(grant)


def _token_of(grant: OAuthGrant) -> AccessToken:
    try:
        value = grant.access_token.reveal()
    except SecretDecryptionError as exc:
        raise OAuthGrantError(
            f"the stored OAuth2 token can't be decrypted with MAILHUB_ENCRYPTION_KEYS; {RECONNECT_HINT}",
            permanent=True,
        ) from exc
    return AccessToken(value=value, grant_id=grant.pk, version=grant.version)


def _request_tokens(grant: OAuthGrant) -> dict[str, Any]:
    """One request to the token endpoint: the refresh grant (RFC 6749 §6), or client credentials
    (§4.4) for an application permission. Raises OAuthGrantError."""
    endpoints = oauth_grant_endpoints(grant=grant)
    session = _session(endpoints)
    try:
        if grant.flow == OAuthFlow.CLIENT_CREDENTIALS:
            what = "client credentials"
            token = session.fetch_token(
                endpoints.token_endpoint,
                grant_type="client_credentials",
                scope=endpoints.scope,
                timeout=settings.MAILHUB_NETWORK_TIMEOUT,
            )
        else:
            what = "token refresh"
            try:
                refresh_token = grant.refresh_token.reveal()
            except SecretDecryptionError as exc:
                raise OAuthGrantError(
                    "the stored refresh token can't be decrypted with MAILHUB_ENCRYPTION_KEYS", permanent=True
                ) from exc
            if not refresh_token:
                raise OAuthGrantError("no refresh token stored", permanent=True)
            token = session.refresh_token(
                endpoints.token_endpoint,
                refresh_token=refresh_token,
                timeout=settings.MAILHUB_NETWORK_TIMEOUT,
            )
    except (OAuthError, requests.RequestException, ValueError) as exc:
        raise _provider_error(exc, what=what) from exc
    answer = dict(token)
    if not answer.get("access_token"):
        raise OAuthGrantError(f"the identity provider's {what} answer has no access token", permanent=True)
    return answer


def oauth_grant_mark_needs_reconnect(*, grant_id: int, reason: str) -> None:
    OAuthGrant.objects.filter(pk=grant_id).update(
        status=GrantStatus.NEEDS_RECONNECT, last_error=reason, access_token="", access_token_expires_at=None
    )


# --- The gateways' credentials ---------------------------------------------------------------------


def mailbox_oauth_grant(*, mailbox: Mailbox, purpose: GrantPurpose) -> OAuthGrant | None:
    """The grant that serves `purpose` (IMAP or SMTP): its own, else the shared one."""
    grants = {g.purpose: g for g in OAuthGrant.objects.filter(mailbox=mailbox)}
    return grants.get(purpose) or grants.get(GrantPurpose.SHARED)


def mailbox_oauth_setup_warnings(*, mailbox: Mailbox) -> list[str]:
    """What an admin must still do before the mailbox's OAuth2 logins can work (the admin shows
    it when the mailbox is saved)."""
    warnings = []
    for protocol, auth, purpose in (
        ("IMAP", mailbox.imap_auth, GrantPurpose.IMAP),
        ("SMTP", mailbox.smtp_auth, GrantPurpose.SMTP),
    ):
        if auth != AuthMethod.OAUTH2:
            continue
        grant = mailbox_oauth_grant(mailbox=mailbox, purpose=purpose)
        if grant is None:
            warnings.append(
                f"{protocol} authentication is OAuth2 but no OAuth2 connection serves {protocol}: "
                f'add one on the mailbox page (for "{GrantPurpose.SHARED.label}" or '
                f'"{purpose.label}"), save, then press Connect. Until then every login fails.'
            )
        elif grant.status == GrantStatus.NOT_CONNECTED and grant.flow == OAuthFlow.AUTHORIZATION_CODE:
            warnings.append(
                f"{protocol} authentication is OAuth2 and its connection is not connected yet: press "
                "Connect on the mailbox page."
            )
    return warnings


def _run_with_token(
    *,
    mailbox: Mailbox,
    purpose: GrantPurpose,
    protocol: str,
    run: Callable[[str], T],
    error: Callable[[str, bool], Exception],
    auth_failed: Callable[[Exception], bool],
) -> T:
    grant = mailbox_oauth_grant(mailbox=mailbox, purpose=purpose)
    if grant is None:
        raise error(
            f"{protocol} is set to OAuth2 but the mailbox has no OAuth2 connection: add one and "
            "press Connect on the mailbox page",
            True,
        )
    try:
        token = oauth_access_token(grant_id=grant.pk)
    except OAuthGrantError as exc:
        raise error(f"{protocol} {exc}", exc.permanent) from exc
    try:
        return run(token.value)
    except Exception as exc:
        if not auth_failed(exc):
            raise
        first = exc
    # RFC 6750 §3.1 invalid_token: the token may be revoked or expired early (clock skew, a
    # password change): ONE retry with a fresh token, unless another worker already has one.
    try:
        token = oauth_access_token(grant_id=grant.pk, refused_version=token.version)
    except OAuthGrantError as exc:
        raise error(f"{protocol} {exc}", exc.permanent) from exc
    try:
        return run(token.value)
    except Exception as exc:
        if not auth_failed(exc):
            raise
        reason = f"the {protocol} server refused a freshly issued token ({exc})"
        oauth_grant_mark_needs_reconnect(grant_id=grant.pk, reason=reason)
        logger.warning("OAuth2 grant %s: %s (before: %s)", grant.pk, reason, first)
        raise error(
            f"{protocol} OAuth2 connection needs to be renewed: {reason}; {RECONNECT_HINT} (or check "
            "that the signed-in account may use this mailbox)",
            True,
        ) from exc


def mailbox_run_imap(*, mailbox: Mailbox, run: Callable[[ImapSettings], T]) -> T:
    """`run(settings)` with the mailbox's IMAP settings: the password, or an OAuth2 access token
    (one retry with a fresh token after an authentication failure). OAuth2 problems are raised
    as ImapError, so the callers handle them as they handle any IMAP error."""
    if mailbox.imap_auth != AuthMethod.OAUTH2:
        return run(mailbox.imap_settings())
    return _run_with_token(
        mailbox=mailbox,
        purpose=GrantPurpose.IMAP,
        protocol="IMAP",
        run=lambda token: run(mailbox.imap_settings(oauth2_token=token)),
        error=lambda message, permanent: ImapError(message, permanent=permanent),
        auth_failed=lambda exc: isinstance(exc, ImapError) and exc.auth_failed,
    )


def mailbox_run_smtp(*, mailbox: Mailbox, run: Callable[[SmtpSettings], T]) -> T:
    """`run(settings)` with the mailbox's SMTP settings (see mailbox_run_imap). An SMTP
    authentication failure happens before MAIL FROM, so the retry can never send twice."""
    if mailbox.smtp_auth != AuthMethod.OAUTH2:
        return run(mailbox.smtp_settings())
    return _run_with_token(
        mailbox=mailbox,
        purpose=GrantPurpose.SMTP,
        protocol="SMTP",
        run=lambda token: run(mailbox.smtp_settings(oauth2_token=token)),
        error=lambda message, permanent: SmtpError(message, permanent=permanent),
        auth_failed=lambda exc: isinstance(exc, SmtpError) and exc.auth_failed,
    )
