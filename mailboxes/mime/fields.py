"""Structured header fields: msg-id (RFC 5322 §3.6.4), date-time (§3.3), address lists (§3.4)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import policy
from email.utils import getaddresses, parsedate_to_datetime

from .charsets import clean
from .headers import controls_to_spaces, decode_header_text, fold_whitespace, normalize_encoded_words

MAX_STRICT_ADDRESSES = 32 * 1024
_MSG_ID = re.compile(r"<([^<>]*)>")
_ADDR_SPEC = re.compile(r"^[^\s@<>(),;:\[\]\\\"]+@[^\s@<>(),;:\\\"]+$")


def addr_spec_valid(address: str) -> bool:
    """Whether `address` is a plain ``local@domain`` as `parse_addresses` keeps them."""
    return bool(_ADDR_SPEC.match(address or ""))


def msg_ids(value: str) -> list[str]:
    """RFC 5322 §3.6.4 msg-ids as "<left@right>"; whitespace inside removed, junk dropped."""
    found = _MSG_ID.findall(value)
    if not found and "<" not in value:  # some clients omit the angle brackets entirely
        found = [token for token in re.split(r"[\s,]+", value) if "@" in token]
    ids = []
    for token in found:
        token = re.sub(r"\s+", "", token)
        if token and token.isprintable() and len(token) <= 998:
            ids.append(f"<{token}>")
    return ids


def parse_date(value: str, problems: list[str]) -> datetime | None:
    """RFC 5322 §3.3 date-time (obsolete forms too) -> aware datetime, or None with a problem."""
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        parsed = None
    if parsed is None:
        problems.append(f"unparseable Date header {value[:80]!r}")
        return None
    # RFC 5322 §3.3: "-0000" (and a missing zone) means no zone information; we store UTC.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_addresses(value: str, where: str, problems: list[str]) -> list[tuple[str, str]]:
    """An address-list header (unfolded) -> [(display name, "local@domain" or "")].

    The stdlib RFC 5322 parser (``policy.default``) does the syntax, after every run of
    encoded-words has been rewritten as one utf-8 word: it cannot join a character split across
    words itself. If it gives up, the legacy ``getaddresses`` reads what it can. Anything that is
    not a plain ``local@domain`` (no domain, route syntax, junk) gets address "" and a problem:
    these values end up as recipients of automatic replies.
    """
    text = normalize_encoded_words(value, where, problems)
    try:
        if len(text) > MAX_STRICT_ADDRESSES:  # the strict parser is quadratic: 16000 addresses take 35 s
            raise ValueError("too long for the strict parser")
        header = policy.default.header_factory("to", text)
        pairs = [(controls_to_spaces(a.display_name), a.addr_spec) for a in header.addresses]
    except Exception as exc:  # noqa: BLE001 - the stdlib header parser raises assorted errors on junk
        problems.append(f"{where}: not RFC 5322 ({type(exc).__name__}: {exc}), addresses read leniently")
        pairs = [(decode_header_text(n, where, problems), a) for n, a in getaddresses([text])]
    result = []
    for name, address in pairs:
        name, address = fold_whitespace(name), clean(address).replace(" ", "")
        if not _ADDR_SPEC.match(address):
            if address and address != "<>":
                problems.append(f"{where}: unusable address {address[:80]!r}")
            name, address = name or address, ""
        if name or address:
            result.append((name, address))
    return result
