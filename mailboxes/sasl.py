"""SASL messages of the OAuth2 bearer-token logins, shared by the IMAP and SMTP gateways. Pure.

Two mechanisms carry an OAuth2 access token (RFC 6750 bearer token) to a mail server:
- OAUTHBEARER (RFC 7628), the standard one (Gmail, Dovecot, Stalwart, ...);
- XOAUTH2, Google's older format that Microsoft 365 (Exchange Online) still requires for IMAP
  and SMTP AUTH: base64 of "user=<u>\\x01auth=Bearer <t>\\x01\\x01".
Both are client-first: the whole credential is the first client response. On failure the
server sends one error challenge (base64 of a JSON object such as {"status":"invalid_token",
...}) and waits for one more client response before its final failure reply: an empty one for
XOAUTH2 (Google's and Microsoft's documentation), the dummy %x01 for OAUTHBEARER (RFC 7628
§3.2.3). The credential is never sent twice.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Final, Literal

Mechanism = Literal["OAUTHBEARER", "XOAUTH2"]

# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
# Anything else (a space, a control character such as the \x01 separator, a line break) would
# change the framing of the SASL message or of the protocol line, so it is never sent.
_B64TOKEN: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# The login name goes into the same \x01-separated message (and, for OAUTHBEARER, the RFC 5801
# GS2 header, where "," and "=" are escaped): control characters could forge fields.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")

#: The client's answer to the error challenge (see the module docstring).
ERROR_CHALLENGE_ANSWER: Final[dict[Mechanism, bytes]] = {"OAUTHBEARER": b"\x01", "XOAUTH2": b""}


def bearer_token_problem(token: str) -> str | None:
    """Why `token` can't be sent as a bearer token, None if it can. Never quotes the token."""
    if not token:
        return "the access token is empty"
    if not _B64TOKEN.fullmatch(token):
        return "the access token has characters that RFC 6750 bearer tokens can't contain"
    return None


def username_problem(username: str) -> str | None:
    if _CONTROL.search(username):
        return "the username has control characters"
    return None


def initial_response(mechanism: Mechanism, username: str, token: str) -> bytes:
    """The client's first (and only) credential message, not yet base64-encoded."""
    if mechanism == "OAUTHBEARER":
        # RFC 7628 §3.1: gs2-header "n,a=<authzid>," (RFC 5801 §4: "=" -> "=3D", "," -> "=2C"),
        # then kvpairs separated by %x01, ended by %x01%x01. The authzid is the mailbox's login
        # name: Gmail and Dovecot compare it with the token's user.
        authzid = username.replace("=", "=3D").replace(",", "=2C")
        return f"n,a={authzid},\x01auth=Bearer {token}\x01\x01".encode()
    return f"user={username}\x01auth=Bearer {token}\x01\x01".encode()


def error_status(challenge: bytes | str) -> str:
    """The `status` of a server's error challenge (already base64-decoded, or still base64 as
    SMTP sends it), for an error message: short, printable, '' when there is none."""
    raw = challenge.encode("ascii", "replace") if isinstance(challenge, str) else challenge
    if raw[:1] != b"{":
        try:
            raw = base64.b64decode(raw, validate=False)
        except (binascii.Error, ValueError):
            return ""
    try:
        parsed = json.loads(raw[:4096])
    except (ValueError, UnicodeDecodeError):
        return ""
    status = parsed.get("status") if isinstance(parsed, dict) else None
    if not isinstance(status, str | int):
        return ""
    return "".join(char for char in str(status)[:40] if char.isprintable())
