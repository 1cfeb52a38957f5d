"""Never start a mail loop: decide whether an incoming email may get an automatic reply.

Pure functions over the parsed top-level headers; no database, no network. `suppression_reason`
returns None when an auto-reply is allowed, else a short reason stored on the `AutoReply` row.
The rules are RFC 3834's plus the vendor fields that help-desk systems (Zammad, OTRS/Znuny,
FreeScout) learned to honour; each check below cites its source. `answered_address` picks the
one address a reply goes to from the *parsed* Reply-To/From pairs and `suppression_reason`
checks exactly that address: re-parsing decoded header text could read an RFC 2047 display name
as a different address than the one answered. The rate limits live in the database layer;
`address_key` gives them the normalised answered address.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

from mailboxes import limits
from mailboxes.mime.headers import header_values as _values

__all__ = ["LoopCheckInput", "address_key", "answered_address", "suppression_reason"]


@dataclass(frozen=True)
class LoopCheckInput:
    headers: list[tuple[str, str]]  # top-level headers of the incoming email, decoded, in order
    sender_address: str  # the From address
    own_addresses: frozenset[str]  # every mailbox address of this installation (lowercase)
    # The address the auto-reply would go to, `answered_address(...)`; "" when there is none.
    answered: str


# Microsoft's documented X-Auto-Response-Suppress values; each one asks responders to stay quiet
# (DR/NDR/RN/NRN are about receipts, but a message asking for none is automatic mail anyway).
_MS_SUPPRESS_VALUES = frozenset({"all", "autoreply", "oof", "dr", "ndr", "rn", "nrn"})

# "auto_reply" is not in RFC 3834 but is sent by several autoresponders (and honoured by Zammad).
_BULK_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})

# Presence alone means "an automaton sent this". Checked in this order, reported by this name.
_AUTOMATION_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Loop", "X-Cron-Env")

# Robot local parts, matched as a whole "word" of the local part so that the common decorations
# (no-reply-billing@, billing-noreply@, bounces+12345@, bounce-mc.us1_...@) are caught too, but
# "jane.bouncer@" or "noreplyrita@" are not.
_ROBOT_LOCAL_PART = re.compile(
    r"(?:^|[-_.+])"
    r"(?:mailer[-_.]?daemon|postmaster|no[-_.]?reply|do[-_.]?not[-_.]?reply|bounces?|listserv|majordomo)"
    r"(?:$|[-_.+=])",
    re.IGNORECASE,
)

# RFC 5322 comments, e.g. "auto-replied (vacation)"; no nesting is needed for these short fields.
_COMMENT = re.compile(r"\([^()]*\)")


def _keyword(value: str) -> str:
    """The leading keyword of a structured field: comments and parameters removed, lowercase."""
    return _COMMENT.sub(" ", value).split(";", 1)[0].strip().lower()


def _bare(address: str) -> str:
    """The address without surrounding blanks and angle brackets, case preserved."""
    address = (address or "").strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1].strip()
    return address


def _normalize_address(address: str) -> str:
    # Local parts are case-sensitive in theory (RFC 5321 §2.4) but never in practice: comparing
    # case-insensitively is the safe side for loop detection.
    return _bare(address).lower()


def _is_valid_address(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    return bool(at and local and domain) and not any(ch.isspace() for ch in address)


def _robot_reason(address: str) -> str | None:
    local = address.rpartition("@")[0]
    if _ROBOT_LOCAL_PART.search(local):
        return f"sender is a robot ({address})"
    return None


def _first_valid(addresses: list[tuple[str, str]]) -> str:
    for _name, address in addresses:
        bare = _bare(address)
        if _is_valid_address(bare):
            return bare
    return ""


def suppression_reason(check: LoopCheckInput) -> str | None:
    """Why this email must not get an auto-reply, or ``None`` when it may get one.

    The first matching rule wins; the order puts the most specific explanation first.
    """
    headers = check.headers
    # Our own mailboxes are recognised under every spelling that reaches them (`+tag`, IDNA,
    # case: address_key), as the rate limit counts them: `support+x@` is still support@.
    own = frozenset(address_key(address) for address in check.own_addresses)
    sender = _normalize_address(check.sender_address)

    if not _is_valid_address(sender):
        return "no sender address"
    # An answer to another mailbox of this installation would be answered back: the classic loop.
    if address_key(sender) in own:
        return "sender is one of our own mailboxes"
    # The answered address (Reply-To when there is one, see answered_address) is where the reply
    # goes, so it passes the same tests as the sender; it is never parsed a second time here.
    answered = _normalize_address(check.answered)
    if answered and answered != sender and address_key(answered) in own:
        return "Reply-To is one of our own mailboxes"
    # An email stored in reduced form (mailboxes/services/storing.py) kept no header field: it
    # can't be checked for Auto-Submitted, List-Id, Precedence..., so it is never answered blind.
    if not headers:
        return "no header fields stored (reduced form): can't be checked for automatic mail"
    # Storing keeps at most MAX_HEADERS fields: a message that reached the cap may have had its
    # Auto-Submitted or List-Id beyond it, so it can't be cleared as a person's mail. (Padding
    # past the cap must never be a way around the rules below.)
    if len(headers) >= limits.MAX_HEADERS:
        return f"too many header fields to check for automatic mail (over {limits.MAX_HEADERS})"

    # RFC 3834 §2 (and §5): any Auto-Submitted value but "no" marks automatic mail. A present
    # but empty field is malformed; treat it as automatic, because a wrong guess here loops.
    for value in _values(headers, "Auto-Submitted"):
        keyword = _keyword(value)
        if keyword != "no":
            return f"Auto-Submitted: {keyword or '(empty)'}"

    for value in _values(headers, "X-Auto-Response-Suppress"):
        tokens = {token.strip().lower() for token in value.split(",")}
        if tokens & _MS_SUPPRESS_VALUES:
            return f"X-Auto-Response-Suppress: {value.strip()}"

    # RFC 3834 §2 names Precedence bulk/junk/list as a reason not to respond.
    for value in _values(headers, "Precedence"):
        keyword = _keyword(value)
        if keyword in _BULK_PRECEDENCE:
            return f"Precedence: {keyword}"

    if _values(headers, "List-Id"):
        return "List-Id header present (mailing list)"
    if _values(headers, "List-Unsubscribe"):
        return "List-Unsubscribe header present"

    # A null reverse-path (RFC 5321 §4.5.5) is used by bounces and other automatic mail so that
    # nothing is ever sent back to it.
    for value in _values(headers, "Return-Path"):
        if _COMMENT.sub("", value).replace(" ", "").strip() in ("", "<>"):
            return "empty Return-Path (<>)"

    for value in _values(headers, "Content-Type"):
        if _keyword(value) == "multipart/report":
            return "delivery status notification (multipart/report)"

    for name in _AUTOMATION_HEADERS:
        if _values(headers, name):
            return f"{name} header present"

    robot = _robot_reason(sender)
    if robot:
        return robot
    if answered and answered != sender:
        robot = _robot_reason(answered)
        if robot:
            return f"Reply-To is a robot ({answered})"
    return None


def answered_address(*, reply_to: list[tuple[str, str]], sender_address: str) -> str:
    """The one address an auto-reply goes to: the first valid Reply-To address, else From.

    `reply_to` is the parsed (display name, address) list of the incoming email, as the MIME
    parser stored it (encoded words decoded, groups flattened, unusable addresses as ``""``).

    RFC 3834 §4 says automatic responses in general SHOULD go to the Return-Path; mailhub's
    auto-responses are acknowledgements that carry the case reference, meant for the person, so
    they go where a human reply goes (RFC 5322 §3.6.2: Reply-To when present, else From). Neither
    address is authenticated, which is why the rate limits key on this address (see
    `address_key`). Only one address is ever answered, however many Reply-To lists: one incoming
    email can never fan out into several replies. Returns ``""`` when there is no usable address;
    the address comes back without angle brackets, its case untouched.
    """
    chosen = _first_valid(reply_to or [])
    if chosen:
        return chosen
    sender = _bare(sender_address)
    return sender if _is_valid_address(sender) else ""


# Providers where dots in the local part are ignored: victim.a@gmail.com is victim.a's inbox too.
_DOTLESS_DOMAINS = frozenset({"gmail.com", "googlemail.com"})


def address_key(address: str) -> str:
    """The normalised form of an answered address, for rate limits only (never for sending).

    Several spellings that reach the same inbox must count as one, otherwise a hostile sender
    rotates them to get one reply each: case is folded (RFC 5321 §2.4 lets local parts be
    case-sensitive, no real server is), angle brackets and blanks are dropped, the domain is
    written in IDNA A-labels (``bücher.example`` = ``xn--bcher-kva.example``) without a trailing
    dot, a ``+tag`` subaddress is dropped (RFC 5233; ``victim+1@`` and ``victim+2@`` are one
    inbox at most providers) and Gmail's ignored dots are removed. Merging two addresses that
    are in fact different inboxes costs at most one suppressed auto-reply, never a wrong
    recipient: the reply still goes to `answered_address` as written.
    """
    bare = _bare(address).lower()
    local, at, domain = bare.rpartition("@")
    if not at:
        return bare
    domain = domain.rstrip(".")
    # Not a valid IDN: the lowercased text is compared as it is.
    with contextlib.suppress(UnicodeError):
        domain = domain.encode("idna").decode("ascii")
    if domain == "googlemail.com":
        domain = "gmail.com"
    local = local.split("+", 1)[0] or local
    if domain in _DOTLESS_DOMAINS:
        local = local.replace(".", "")
    return f"{local}@{domain}"
