"""The local OAuth2 identity provider (tests/servers/oauth.py): code flow with PKCE, refresh with
rotation, revocation, client credentials, and tokens the OAuth2 Dovecot accepts."""

import base64
import hashlib
import json
import secrets
import urllib.error
import urllib.parse
import urllib.request

import pytest

from mailboxes.imap import ImapError, ImapSettings, imap_check_connection

from .oauth import CLIENT_ID, CLIENT_SECRET, LocalOAuthServer

pytestmark = pytest.mark.integration

REDIRECT_URI = "http://127.0.0.1:9/admin/oauth/callback"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _authorize(server: LocalOAuthServer, **params: str) -> dict[str, str]:
    """The query of the authorization endpoint's redirect."""
    query = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI, **params}
    opener = urllib.request.build_opener(_NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as raised:
        opener.open(f"{server.authorization_endpoint}?{urllib.parse.urlencode(query)}", timeout=5)
    assert raised.value.code == 302
    location = raised.value.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


def _post(url: str, form: dict[str, str], secret: str = CLIENT_SECRET) -> tuple[int, dict]:
    data = urllib.parse.urlencode({"client_id": CLIENT_ID, "client_secret": secret, **form}).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _code_flow(server: LocalOAuthServer) -> dict:
    verifier, challenge = _pkce()
    answer = _authorize(server, code_challenge=challenge, code_challenge_method="S256", state="s-1")
    status, tokens = _post(
        server.token_endpoint,
        {
            "grant_type": "authorization_code",
            "code": answer["code"],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
    )
    assert status == 200, tokens
    return tokens


def _refresh(server: LocalOAuthServer, refresh_token: str) -> tuple[int, dict]:
    return _post(server.token_endpoint, {"grant_type": "refresh_token", "refresh_token": refresh_token})


def test_code_flow_with_pkce_returns_tokens_for_the_approved_user(oauth_server, oauth_keys):
    verifier, challenge = _pkce()
    answer = _authorize(oauth_server, code_challenge=challenge, code_challenge_method="S256", state="st-42")
    assert sorted(answer) == ["code", "state"]
    assert answer["state"] == "st-42"
    status, tokens = _post(
        oauth_server.token_endpoint,
        {
            "grant_type": "authorization_code",
            "code": answer["code"],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
    )
    assert status == 200
    assert sorted(tokens) == ["access_token", "expires_in", "refresh_token", "scope", "token_type"]
    assert (tokens["token_type"], tokens["expires_in"]) == ("Bearer", 300)
    assert oauth_keys.check(tokens["access_token"], username="user@mailhub.test") is None
    assert oauth_server.counts == {"authorize": 1, "authorization_code": 1}


def test_code_is_refused_with_a_wrong_verifier_and_is_single_use(oauth_server):
    _verifier, challenge = _pkce()
    code = _authorize(oauth_server, code_challenge=challenge, code_challenge_method="S256")["code"]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}
    assert _post(oauth_server.token_endpoint, {**form, "code_verifier": "not-the-verifier"}) == (
        400,
        {
            "error": "invalid_grant",
            "error_description": "PKCE code_verifier does not match the code_challenge",
        },
    )
    # The code was consumed by the failed attempt: the right verifier comes too late.
    assert (
        _post(oauth_server.token_endpoint, {**form, "code_verifier": _verifier})[1]["error"]
        == "invalid_grant"
    )


def test_authorization_without_pkce_s256_is_refused(oauth_server):
    assert _authorize(oauth_server, state="x", code_challenge="abc", code_challenge_method="plain") == {
        "error": "invalid_request",
        "error_description": "PKCE S256 is required",
        "state": "x",
    }


def test_refresh_rotates_and_an_old_refresh_token_is_invalid_grant(oauth_server, oauth_keys):
    first = _code_flow(oauth_server)
    status, second = _refresh(oauth_server, first["refresh_token"])
    assert status == 200
    assert second["refresh_token"] != first["refresh_token"]
    assert oauth_keys.check(second["access_token"], username="user@mailhub.test") is None
    assert _refresh(oauth_server, first["refresh_token"]) == (
        400,
        {"error": "invalid_grant", "error_description": "refresh token already used (it was rotated)"},
    )
    status, _third = _refresh(oauth_server, second["refresh_token"])
    assert (status, oauth_server.refresh_token_count()) == (200, 1)
    assert oauth_server.counts["refresh_token"] == 3


def test_revoked_grant_refuses_the_next_refresh(oauth_server):
    tokens = _code_flow(oauth_server)
    assert oauth_server.revoke() == 1
    assert _refresh(oauth_server, tokens["refresh_token"]) == (
        400,
        {"error": "invalid_grant", "error_description": "the grant was revoked: sign in again"},
    )


def test_revocation_endpoint_revokes_a_refresh_token(oauth_server):
    tokens = _code_flow(oauth_server)
    assert _post(oauth_server.revocation_endpoint, {"token": tokens["refresh_token"]}) == (200, {})
    assert _refresh(oauth_server, tokens["refresh_token"])[1]["error"] == "invalid_grant"
    assert oauth_server.counts["revoke"] == 1


def test_client_credentials_gives_an_access_token_only(oauth_server, oauth_keys):
    status, tokens = _post(oauth_server.token_endpoint, {"grant_type": "client_credentials", "scope": "mail"})
    assert status == 200
    assert "refresh_token" not in tokens
    assert oauth_keys.check(tokens["access_token"], username="user@mailhub.test") is None


def test_wrong_client_secret_is_invalid_client(oauth_server):
    assert _post(oauth_server.token_endpoint, {"grant_type": "client_credentials"}, secret="nope") == (
        401,
        {"error": "invalid_client", "error_description": "client authentication failed"},
    )


def test_provider_token_logs_in_to_the_oauth_dovecot(oauth_server, dovecot_oauth_server):
    tokens = _code_flow(oauth_server)
    imap = ImapSettings(
        host=dovecot_oauth_server.host,
        port=dovecot_oauth_server.port,
        security="none",
        username="user@mailhub.test",
        password="",
        oauth2_token=tokens["access_token"],
        timeout=10,
    )
    assert imap_check_connection(imap).startswith("IMAP OK: logged in to ")


def test_token_of_another_issuer_is_refused_by_dovecot(oauth_keys, dovecot_oauth_server):
    with LocalOAuthServer(oauth_keys, issuer="https://login.example.test/other-tenant/v2.0") as other:
        _status, tokens = _post(other.token_endpoint, {"grant_type": "client_credentials"})
    imap = ImapSettings(
        host=dovecot_oauth_server.host,
        port=dovecot_oauth_server.port,
        security="none",
        username="user@mailhub.test",
        password="",
        oauth2_token=tokens["access_token"],
        timeout=10,
    )
    with pytest.raises(ImapError) as raised:
        imap_check_connection(imap)
    assert raised.value.auth_failed is True
