"""Never start a mail loop: decide whether an incoming email may get an automatic reply.

Pure functions over the already parsed top-level headers of the incoming email; no database, no
network. `suppression_reason` returns ``None`` when an auto-reply is allowed, otherwise a short,
specific reason that is stored on the `AutoReply` row and shown to admins.

The rules follow RFC 3834 ("Recommendations for Automatic Responses to Electronic Mail") and what
help-desk systems (Zammad, OTRS/Znuny, FreeScout) learned the hard way:

* RFC 3834 §2: never answer a message whose ``Auto-Submitted`` field has any value other than
  ``no``; a responder may (and should) also refuse messages that look automatic or bulk:
  ``Precedence: bulk/junk/list``, mailing-list fields (``List-Id`` RFC 2919, ``List-Unsubscribe``
  RFC 2369), a null envelope sender (``Return-Path: <>``, which bounces and other automatic
  messages carry precisely so that nobody answers them).
* RFC 3834 §3.1: our own replies carry ``Auto-Submitted: auto-replied`` (added by the sending layer),
  so a well-behaved responder on the other side will not answer us back; for the ones that are
  not well behaved, the vendor fields below catch what the RFC does not.
* Microsoft Exchange/Outlook mark mail with ``X-Auto-Response-Suppress`` (values ``All``,
  ``AutoReply``, ``OOF``, ``DR``, ``NDR``, ``RN``, ``NRN``): any of them means "do not answer".
* Older autoresponders add ``X-Autoreply`` / ``X-Autorespond``; ticket systems and list managers
  add ``X-Loop``: their mere presence suppresses.
* Delivery and read reports (``Content-Type: multipart/report``, RFC 6522) are never answered.
* Robot senders (mailer-daemon, postmaster, no-reply, bounces, ...) never read the answer, and an
  answer to one of *our own* mailboxes is the classic two-mailbox loop.

Rate limiting (one auto-reply per sender per mailbox per time window) is the last line of defence
and lives in the database layer, not here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import getaddresses

__all__ = ["LoopCheckInput", "reply_recipient", "suppression_reason"]


@dataclass(frozen=True)
class LoopCheckInput:
    headers: list[tuple[str, str]]  # top-level headers of the incoming email, decoded, in order
    sender_address: str  # the From address
    own_addresses: frozenset[str]  # every mailbox address of this installation (lowercase)


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


def _values(headers: list[tuple[str, str]], name: str) -> list[str]:
    """All values of header `name` (field names are case-insensitive, RFC 5322 §1.2.2)."""
    wanted = name.lower()
    return [value or "" for key, value in headers if (key or "").strip().lower() == wanted]


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
    own = frozenset(_normalize_address(address) for address in check.own_addresses)
    sender = _normalize_address(check.sender_address)

    if not _is_valid_address(sender):
        return "no sender address"
    # An answer to another mailbox of this installation would be answered back: the classic loop.
    if sender in own:
        return "sender is one of our own mailboxes"
    # Reply-To decides where the answer goes (see reply_recipient), so it must pass the same tests.
    reply_to = _first_valid(getaddresses(_values(headers, "Reply-To"))).lower()
    if reply_to and reply_to in own:
        return "Reply-To is one of our own mailboxes"

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
    if reply_to:
        robot = _robot_reason(reply_to)
        if robot:
            return f"Reply-To is a robot ({reply_to})"
    return None


def reply_recipient(*, reply_to: list[tuple[str, str]], sender_address: str) -> str:
    """The address an auto-reply goes to: the first valid Reply-To address, else the From address.

    RFC 3834 §4 lets a service response (a ticket acknowledgement is one) go where the author asked
    answers to go, i.e. Reply-To, falling back to From. Returns ``""`` when there is no usable
    address; the address comes back without angle brackets, its case untouched.
    """
    chosen = _first_valid(reply_to or [])
    if chosen:
        return chosen
    sender = _bare(sender_address)
    return sender if _is_valid_address(sender) else ""
