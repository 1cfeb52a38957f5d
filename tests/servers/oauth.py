"""A local OAuth2 identity provider for the tests, and the key it shares with the mail servers.

`OAuthKeys` is one HMAC signing key (JWS HS256, RFC 7518 §3.2) with its key id, issuer and
audience. The identity provider signs its access tokens with it; the test Dovecot validates them
locally (its oauth2 passdb with `introspection_mode = local` reads the key from a dict on disk,
see dovecot.py) and the test SMTP server checks them in its AUTH XOAUTH2 handler (smtp.py). So a
token the provider issues works on both, and a token signed with any other key, expired or for
another user works on neither.

`LocalOAuthServer` is the provider: a threading http.server on 127.0.0.1 with
- an authorization endpoint (RFC 6749 §4.1, code flow) that requires PKCE S256 (RFC 7636) and
  auto-approves the configured user, redirecting to the redirect_uri with `code` and `state`;
- a token endpoint (RFC 6749 §3.2) for authorization_code (with the code_verifier check),
  refresh_token WITH ROTATION (every refresh returns a new refresh token and invalidates the old
  one; an old one is `invalid_grant`, as Microsoft's identity platform does) and
  client_credentials (RFC 6749 §4.4: an access token only);
- a revocation endpoint (RFC 7009) and `revoke(username)`, after which the user's refresh tokens
  answer `invalid_grant` (what a user or an admin withdrawing consent looks like to a client).
Every request is counted by kind (`counts`), so that tests can assert "no retry storm".
The endpoints also answer under Microsoft's tenant paths, /<tenant>/oauth2/v2.0/{authorize,token}
(`paths` records every path asked for); with `tenant` set, another tenant is refused as Microsoft
refuses an unknown one (AADSTS90002).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import secrets
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

from .common import LOCALHOST, ManagedServer, register_running, unregister_running

ISSUER = "https://idp.mailhub.test"
CLIENT_ID = "mailhub-test-client"
CLIENT_SECRET = "mailhub-test-client-secret"
# The claim Dovecot (username_attribute) and the SMTP server read the mailbox's login name from:
# Google puts the address in `email`; Microsoft's v2 tokens carry `upn` / `preferred_username`.
USERNAME_CLAIM = "email"
ALGORITHM = "HS256"
_TENANT_PATH = re.compile(r"/(?P<tenant>[^/]+)/oauth2/v2\.0(?P<endpoint>/authorize|/token)")


@dataclass(frozen=True)
class OAuthKeys:
    """The signing key shared by the identity provider and the mail servers that trust it."""

    secret: bytes = field(repr=False)
    kid: str = "mailhub-test-1"
    issuer: str = ISSUER
    audience: str = CLIENT_ID
    # The `azp` claim (authorized party, OpenID Connect Core §2): Dovecot looks the key up under
    # <azp>/<alg>/<kid> in its key dict ("default" for a token without azp).
    azp: str = CLIENT_ID
    username_claim: str = USERNAME_CLAIM

    @classmethod
    def generate(cls, **kwargs: Any) -> OAuthKeys:
        return cls(secret=secrets.token_bytes(32), **kwargs)

    def access_token(
        self,
        username: str,
        *,
        lifetime: float = 300,
        issued_at: float | None = None,
        scope: str = "mail",
        **claims: Any,
    ) -> str:
        """A signed JWT access token for `username`; `claims` add or override claims."""
        now = int(time.time() if issued_at is None else issued_at)
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "azp": self.azp,
            "sub": f"sub-{username}",
            self.username_claim: username,
            "scope": scope,
            "iat": now,
            "exp": now + int(lifetime),
            "jti": secrets.token_hex(8),
        }
        payload.update(claims)
        return jwt.encode({"alg": ALGORITHM, "kid": self.kid}, payload, OctKey.import_key(self.secret))

    def check(self, token: str, *, username: str) -> str | None:
        """None if `token` is valid for `username` (signature, expiry, issuer, audience, user);
        else why not, in words that never quote the token."""
        try:
            decoded = jwt.decode(token, OctKey.import_key(self.secret), algorithms=[ALGORITHM])
        except (JoseError, ValueError, binascii.Error):
            return "bad signature or not a JWT"
        if decoded.header.get("kid") != self.kid:
            return "unknown key id"
        registry = jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.audience},
            sub={"essential": True},
            exp={"essential": True},
        )
        try:
            registry.validate(decoded.claims)
        except JoseError as exc:
            return f"invalid claims ({exc.error})"
        if decoded.claims.get(self.username_claim) != username:
            return "token of another user"
        return None

    def write_key_dict(self, directory: Path) -> None:
        """The key as Dovecot's `local_validation_key_dict = fs:posix:prefix=<directory>/` reads
        it: a file <azp>/<alg>/<kid> holding the base64 of the HMAC key (no newline)."""
        path = directory / self.azp / ALGORITHM / self.kid
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64encode(self.secret))
        for part in (directory, directory / self.azp, path.parent):
            part.chmod(0o755)
        path.chmod(0o644)


@dataclass
class _Grant:
    username: str
    scope: str
    revoked: bool = False


@dataclass
class _Code:
    grant: _Grant
    client_id: str
    redirect_uri: str
    code_challenge: str
    expires: float


class OAuthError(Exception):
    """An error answer of the token endpoint (RFC 6749 §5.2)."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


class LocalOAuthServer(ManagedServer):
    """The local identity provider on 127.0.0.1 (see the module docstring).

    `username` is who the authorization endpoint approves; `access_token_lifetime` the lifetime
    in seconds of every access token (short, so that tests see tokens expire); `issuer` the
    `iss` of the tokens it signs (another value than `keys.issuer` makes tokens the mail
    servers refuse: a wrong tenant or issuer).
    """

    def __init__(
        self,
        keys: OAuthKeys,
        *,
        username: str = "user@mailhub.test",
        client_id: str = CLIENT_ID,
        client_secret: str = CLIENT_SECRET,
        access_token_lifetime: float = 300,
        issuer: str | None = None,
        tenant: str | None = None,
        host: str = LOCALHOST,
    ) -> None:
        self.keys = keys
        self.username = username
        self.client_id = client_id
        self.client_secret = client_secret
        self.access_token_lifetime = access_token_lifetime
        self.issuer = issuer or keys.issuer
        self.tenant = tenant
        self.paths: list[str] = []
        self.host = host
        self.port = 0
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._codes: dict[str, _Code] = {}
        self._refresh_tokens: dict[str, _Grant] = {}
        self._used_refresh_tokens: set[str] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> None:
        if self._httpd is not None:
            return
        started = time.monotonic()
        handler = type("_BoundHandler", (_Handler,), {"provider": self})
        self._httpd = ThreadingHTTPServer((self.host, self.port), handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="oauth-idp", daemon=True)
        self._thread.start()
        register_running(self)
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        unregister_running(self)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.base_url}/authorize"

    @property
    def token_endpoint(self) -> str:
        return f"{self.base_url}/token"

    @property
    def revocation_endpoint(self) -> str:
        return f"{self.base_url}/revoke"

    # -- helpers for tests -------------------------------------------------------------------

    def revoke(self, username: str | None = None) -> int:
        """Withdraw every grant of `username` (default: the approved user); return how many.
        The next refresh with any of its refresh tokens answers invalid_grant."""
        username = username or self.username
        with self._lock:
            grants = {id(g): g for g in self._refresh_tokens.values() if g.username == username}
            for grant in grants.values():
                grant.revoked = True
            return len(grants)

    def refresh_token_count(self) -> int:
        """How many refresh tokens would be accepted right now."""
        with self._lock:
            return sum(1 for grant in self._refresh_tokens.values() if not grant.revoked)

    # -- the endpoints -----------------------------------------------------------------------

    def authorize(self, query: dict[str, str]) -> str:
        """The redirect location of one authorization request (RFC 6749 §4.1.1-§4.1.2)."""
        self._count("authorize")
        if query.get("client_id") != self.client_id or not query.get("redirect_uri"):
            # §4.1.2.1: never redirect to an unverified redirect_uri.
            raise OAuthError("invalid_request", "unknown client_id or missing redirect_uri")
        redirect_uri = query["redirect_uri"]
        answer: dict[str, str]
        if query.get("response_type") != "code":
            answer = {"error": "unsupported_response_type"}
        elif query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            answer = {"error": "invalid_request", "error_description": "PKCE S256 is required"}
        else:
            code = secrets.token_urlsafe(24)
            with self._lock:
                self._codes[code] = _Code(
                    grant=_Grant(self.username, query.get("scope", "")),
                    client_id=self.client_id,
                    redirect_uri=redirect_uri,
                    code_challenge=query["code_challenge"],
                    expires=time.monotonic() + 600,
                )
            answer = {"code": code}
        if "state" in query:
            answer["state"] = query["state"]
        separator = "&" if urllib.parse.urlsplit(redirect_uri).query else "?"
        return redirect_uri + separator + urllib.parse.urlencode(answer)

    def token(self, form: dict[str, str], authorization: str | None) -> dict[str, Any]:
        grant_type = form.get("grant_type", "")
        self._count(grant_type or "unknown")
        self._authenticate_client(form, authorization)
        if grant_type == "authorization_code":
            return self._authorization_code(form)
        if grant_type == "refresh_token":
            return self._refresh(form)
        if grant_type == "client_credentials":
            # RFC 6749 §4.4.3: no refresh token. The token stands for the configured mailbox
            # (Microsoft's application permission for a shared mailbox).
            return self._tokens(_Grant(self.username, form.get("scope", "")), refresh=False)
        raise OAuthError("unsupported_grant_type", f"grant_type {grant_type[:40]!r} is not supported")

    def revocation(self, form: dict[str, str], authorization: str | None) -> None:
        """RFC 7009 §2.2: 200 whether or not the token was known."""
        self._count("revoke")
        self._authenticate_client(form, authorization)
        with self._lock:
            grant = self._refresh_tokens.get(form.get("token", ""))
            if grant is not None:
                grant.revoked = True

    def _count(self, kind: str) -> None:
        with self._lock:
            self.counts[kind] += 1

    def _authenticate_client(self, form: dict[str, str], authorization: str | None) -> None:
        """client_secret_basic or client_secret_post (RFC 6749 §2.3.1)."""
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        if authorization and authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:]).decode()
            except (binascii.Error, UnicodeDecodeError):
                decoded = ":"
            user, _, password = decoded.partition(":")
            client_id, secret = urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password)
        if client_id != self.client_id or not hmac.compare_digest(secret, self.client_secret):
            raise OAuthError("invalid_client", "client authentication failed", status=401)

    def _authorization_code(self, form: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            code = self._codes.pop(form.get("code", ""), None)  # single use (RFC 6749 §4.1.2)
        if code is None or code.expires < time.monotonic():
            raise OAuthError("invalid_grant", "unknown, used or expired authorization code")
        if form.get("redirect_uri") != code.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
        verifier = form.get("code_verifier", "")
        # RFC 7636 §4.6: BASE64URL(SHA256(code_verifier)) must equal the code_challenge.
        if not verifier or not hmac.compare_digest(create_s256_code_challenge(verifier), code.code_challenge):
            raise OAuthError("invalid_grant", "PKCE code_verifier does not match the code_challenge")
        return self._tokens(code.grant, refresh=True)

    def _refresh(self, form: dict[str, str]) -> dict[str, Any]:
        presented = form.get("refresh_token", "")
        with self._lock:
            if presented in self._used_refresh_tokens:
                raise OAuthError("invalid_grant", "refresh token already used (it was rotated)")
            grant = self._refresh_tokens.pop(presented, None)
            if grant is None:
                raise OAuthError("invalid_grant", "unknown refresh token")
            if grant.revoked:
                self._refresh_tokens[presented] = grant
                raise OAuthError("invalid_grant", "the grant was revoked: sign in again")
            self._used_refresh_tokens.add(presented)
        return self._tokens(grant, refresh=True)

    def _tokens(self, grant: _Grant, *, refresh: bool) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "access_token": self.keys.access_token(
                grant.username, lifetime=self.access_token_lifetime, iss=self.issuer
            ),
            "token_type": "Bearer",
            "expires_in": int(self.access_token_lifetime),
            "scope": grant.scope,
        }
        if refresh:
            refresh_token = secrets.token_urlsafe(32)
            with self._lock:
                self._refresh_tokens[refresh_token] = grant
            answer["refresh_token"] = refresh_token
        return answer


class _Handler(BaseHTTPRequestHandler):
    provider: LocalOAuthServer

    def _endpoint(self, path: str) -> str:
        """/authorize or /token also under a Microsoft tenant path; raises OAuthError for a
        tenant other than the provider's."""
        with self.provider._lock:
            self.provider.paths.append(path)
        match = _TENANT_PATH.fullmatch(path)
        if match is None:
            return path
        if self.provider.tenant is not None and match["tenant"] != self.provider.tenant:
            raise OAuthError(
                "invalid_request", f"AADSTS90002: Tenant '{match['tenant'][:60]}' not found.", status=400
            )
        return match["endpoint"]

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the request line carries codes and tokens."""

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        try:
            if self._endpoint(url.path) != "/authorize":
                self._json(404, {"error": "not_found"})
                return
            location = self.provider.authorize(query)
        except OAuthError as exc:
            self._json(exc.status, {"error": exc.error, "error_description": exc.description})
            return
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        authorization = self.headers.get("Authorization")
        try:
            endpoint = self._endpoint(self.path)
            if endpoint == "/token":
                self._json(200, self.provider.token(form, authorization))
            elif endpoint == "/revoke":
                self.provider.revocation(form, authorization)
                self._json(200, {})
            else:
                self._json(404, {"error": "not_found"})
        except OAuthError as exc:
            self._json(exc.status, {"error": exc.error, "error_description": exc.description})

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        # RFC 6749 §5.1: token answers must not be cached.
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
