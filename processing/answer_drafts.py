"""What an answer of staff looks like before anybody edits it, and the message it becomes.

Pure: no ORM, no settings, no I/O. The answer service gives plain values of the email answered
(`Original`) and gets back recipients, subject, quotes, thread headers and, at the end, the exact
bytes to send (`answer_message_build`). Everything that comes from the email answered is hostile
input: names and subjects may carry CR/LF (header injection), encoded words, megabytes of text,
a thousand addresses; every value that ends up in a header goes through `one_line` (the rule of
`autoresponse.rendering.header_value_safe`) and every address through `addr_spec_valid`.
"""

from __future__ import annotations

import html
import mimetypes
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.policy import default as DEFAULT_POLICY
from email.utils import format_datetime
from enum import StrEnum

from autoresponse.loops import address_key
from autoresponse.rendering import header_value_safe
from mailboxes import limits
from mailboxes.mime.fields import addr_spec_valid, msg_ids, parse_addresses
from mailboxes.mime.filenames import sanitize_filename
from mailboxes.mime.sanitize import normalize_content_id, sanitize_email_html

_HEADER_FACTORY = DEFAULT_POLICY.header_factory

Pair = tuple[str, str]  # (display name, "local@domain"), as the parser stores address lists

#: Characters of the original's text (or HTML) that are quoted; the rest is said to be cut.
MAX_QUOTED_CHARS = 100_000
#: Message-IDs an answer's References carries: as many as storing keeps (the first and the newest).
MAX_REFERENCES = limits.MAX_REFERENCES
#: A msg-id longer than this is left out of References: it could not share a header line.
MAX_MSG_ID_CHARS = 500


class AnswerMode(StrEnum):
    REPLY = "reply"
    REPLY_ALL = "reply_all"
    FORWARD = "forward"


@dataclass(frozen=True)
class Original:
    """The email answered, as plain values (the parsed and stored form)."""

    subject: str = ""
    from_name: str = ""
    from_address: str = ""
    reply_to: Sequence[Pair] = ()
    to: Sequence[Pair] = ()
    cc: Sequence[Pair] = ()
    date: datetime | None = None
    message_id: str = ""
    references: Sequence[str] = ()
    text_body: str = ""
    html_body: str = ""


@dataclass(frozen=True)
class AnswerDraft:
    """The compose form before the agent edits it."""

    mode: AnswerMode
    to: list[Pair]
    cc: list[Pair]
    subject: str
    body: str
    # Ids of the original's attachments a forward carries (preselected in the form).
    attachment_ids: list[int] = field(default_factory=list)


def one_line(value: str) -> str:
    """A value as one header line: no CR, LF or other control character, at most 998 chars.

    Also once the email library has read it: assigning a header decodes any RFC 2047 encoded
    word in the value (`=?utf-8?b?DQo=?=` is CR LF), and the decoded text is what gets written.
    So the value is decoded the library's way and cleaned again, until nothing changes (a
    doubly encoded word needs two rounds); what still decodes after that loses its `=?`.
    """
    text = header_value_safe(value)
    for _ in range(4):
        if "=?" not in text:
            return text
        decoded = header_value_safe(str(_HEADER_FACTORY("subject", text)))
        if decoded == text:
            return text
        text = decoded
    return header_value_safe(text.replace("=?", "= ?"))


# -- recipients --------------------------------------------------------------------------------


def sendable_address(address: str) -> str:
    """`address` as it can go into a 7-bit header and an RCPT TO, or "" when it can't: a valid
    addr-spec, domain in IDNA A-labels (RFC 5890), ASCII local part (no SMTPUTF8 needed)."""
    address = (address or "").strip().strip("<>").strip()
    if not addr_spec_valid(address):
        return ""
    local, _, domain = address.rpartition("@")
    try:
        domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        return ""
    if not local.isascii() or not local.isprintable():
        return ""
    return f"{local}@{domain}"


def _clean_pairs(pairs: Iterable[Sequence[str]], *, sendable: bool = False) -> list[Pair]:
    cleaned = []
    for pair in pairs:
        name, address = [*list(pair), "", ""][:2]
        address = (address or "").strip().strip("<>").strip()
        if sendable:
            address = sendable_address(address)
        if address and addr_spec_valid(address):
            cleaned.append((one_line(name or ""), address))
    return cleaned


def answer_recipients(
    *, mode: AnswerMode, original: Original, own_addresses: Iterable[str]
) -> tuple[list[Pair], list[Pair]]:
    """(To, Cc) of an answer, the way good mail clients prefill them.

    Reply: the first valid Reply-To, else From (RFC 5322 §3.6.2). Reply all: also the original's
    To and Cc (Cc stays Cc). Never one of our own mailboxes, under any spelling that reaches it
    (`address_key`: case, +tag, IDNA), and never an address twice (compared case-insensitively).
    Forward: nobody, the agent chooses.
    """
    if mode == AnswerMode.FORWARD:
        return [], []
    own = {address_key(address) for address in own_addresses if address}
    reply_to = _clean_pairs(original.reply_to)
    sender = _clean_pairs([(original.from_name, original.from_address)])
    primary = reply_to[:1] or sender
    to_candidates = list(primary)
    cc_candidates: list[Pair] = []
    if mode == AnswerMode.REPLY_ALL:
        to_candidates += _clean_pairs(original.to)
        cc_candidates = _clean_pairs(original.cc)
    seen: set[str] = set()

    def keep(pairs: list[Pair]) -> list[Pair]:
        kept = []
        for name, address in pairs:
            lowered = address.lower()
            if lowered in seen or address_key(address) in own:
                continue
            seen.add(lowered)
            kept.append((name, address))
        return kept

    return keep(to_candidates), keep(cc_candidates)


def format_pair(pair: Pair) -> str:
    """'Name <address>' as typed in a form (quoted when the name needs it), or the address."""
    name, address = one_line(pair[0]), pair[1]
    if not name:
        return address
    try:
        return str(Address(display_name=name, addr_spec=address))
    except (ValueError, IndexError, TypeError):
        return address


def format_pairs(pairs: Iterable[Pair]) -> str:
    return ", ".join(format_pair(pair) for pair in pairs)


class RecipientsInvalid(ValueError):
    """A recipient field the agent typed that can't be sent to; the message says why."""


def recipients_parse(value: str, *, field_name: str, max_chars: int = 64 * 1024) -> list[Pair]:
    """The addresses of a To/Cc/Bcc field typed by an agent, with the parser that stores mail
    (mailboxes.mime.fields.parse_addresses). Anything unusable is refused, never dropped: an
    answer silently sent to fewer people than written is worse than an error."""
    if len(value) > max_chars:
        raise RecipientsInvalid(f"{field_name}: too long")
    if not value.strip():
        return []
    problems: list[str] = []
    pairs = parse_addresses(value.replace("\r", " ").replace("\n", " "), field_name, problems)
    bad = [name or address for name, address in pairs if not sendable_address(address)]
    if bad or problems:
        shown = ", ".join(repr(item[:80]) for item in bad[:3]) or problems[0][:200]
        raise RecipientsInvalid(f"{field_name}: not a usable address: {shown}")
    return [(one_line(name), sendable_address(address)) for name, address in pairs]


# -- subject -------------------------------------------------------------------------------------

# Reply and forward prefixes of the common mail clients and languages (Re, Fw, Fwd; German AW, WG;
# Scandinavian SV, VS; Dutch Antw; French Réf, TR; Italian RIF; Polish Odp; Turkish YNT), with the
# optional counters some clients add (`Re[2]:`, `Re(2):`). A colon (ASCII or full-width) is
# required: "Reform" stays.
_PREFIX = re.compile(
    r"^\s*(?:re|fwd?|aw|sv|wg|vs|antw|antwort|r[ée]f|tr|rif|odp|ynt)\s*(?:\[\d{1,9}\]|\(\d{1,9}\))?\s*[:\uff1a]\s*",
    re.IGNORECASE,
)


def subject_base(subject: str, *, case_token: str = "") -> str:
    """The subject without any run of reply/forward prefixes and without the case's token."""
    text = one_line(subject)
    token = case_token.strip()
    if token:
        text = " ".join(text.replace(token, " ").split())
    while True:
        stripped = _PREFIX.sub("", text, count=1)
        if stripped == text:
            return text.strip()
        text = stripped


def answer_subject(*, mode: AnswerMode, subject: str, case_reference: str = "") -> str:
    """`Re: ` or `Fwd: ` once, then the case token `[#1042]` once when the email is on a case
    (the customer's answer threads back by it: processing/services/threads.py), then the subject
    without the prefixes it had piled up. One header line, at most 998 characters."""
    token = f"[{case_reference}]" if case_reference else ""
    base = subject_base(subject, case_token=token)
    prefix = "Fwd: " if mode == AnswerMode.FORWARD else "Re: "
    return one_line(" ".join(part for part in (prefix.strip(), token, base) if part))


# -- quoting -------------------------------------------------------------------------------------


def _who(original: Original) -> str:
    name = one_line(original.from_name)
    address = one_line(original.from_address)
    if name and address:
        return f"{name} <{address}>"
    return name or address or "an unknown sender"


def _when(date: datetime | None) -> str:
    return date.strftime("%a, %d %b %Y at %H:%M") if date else "an unknown date"


def _cut(text: str, limit: int) -> tuple[str, bool]:
    return (text, False) if len(text) <= limit else (text[:limit], True)


def attribution(original: Original) -> str:
    return f"On {_when(original.date)}, {_who(original)} wrote:"


def quote_text(original: Original, *, limit: int = MAX_QUOTED_CHARS) -> str:
    """The original's text, "> " on every line under "On <date>, <name> wrote:". Only the first
    `limit` characters are quoted, and the quote says so when it was cut."""
    text, cut = _cut(original.text_body.replace("\r\n", "\n").replace("\r", "\n"), limit)
    lines = [attribution(original)]
    lines += [">" if not line else f"> {line}" for line in text.rstrip("\n").split("\n")]
    if cut:
        lines.append(f"> [... quote cut: only the first {limit:,} characters are quoted]")
    return "\n".join(lines) + "\n"


def _addresses_line(pairs: Sequence[Pair]) -> str:
    return one_line(", ".join(format_pair(pair) for pair in _clean_pairs(pairs[:50])))


def forward_headers(original: Original) -> list[tuple[str, str]]:
    rows = [
        ("From", _who(original)),
        ("Date", format_datetime(original.date) if original.date else "unknown"),
        ("Subject", one_line(original.subject)),
        ("To", _addresses_line(original.to)),
    ]
    if original.cc:
        rows.append(("Cc", _addresses_line(original.cc)))
    return rows


FORWARD_MARKER = "---------- Forwarded message ---------"


def forward_text(original: Original, *, limit: int = MAX_QUOTED_CHARS) -> str:
    """The forwarded-message block of Gmail and Thunderbird: a marker, the original's From,
    Date, Subject, To (and Cc), then its text as it is."""
    text, cut = _cut(original.text_body.replace("\r\n", "\n").replace("\r", "\n"), limit)
    lines = [FORWARD_MARKER, *(f"{name}: {value}" for name, value in forward_headers(original)), ""]
    lines.append(text.rstrip("\n"))
    if cut:
        lines.append(f"[... cut: only the first {limit:,} characters are forwarded]")
    return "\n".join(lines) + "\n"


def _original_html(original: Original, carried_content_ids: Iterable[str], limit: int) -> str:
    """The original's HTML through the allow-list sanitizer of the email page, or its text as
    escaped HTML. Remote images stay (the recipient's mail client decides whether it loads them);
    a `cid:` image stays only if the answer carries that inline part, else it would be broken."""
    if not original.html_body.strip():
        text, cut = _cut(original.text_body, limit)
        body = "<pre>" + html.escape(text) + "</pre>"
        return body + (f"<p>[... cut after {limit:,} characters]</p>" if cut else "")
    source, cut = _cut(original.html_body, limit)
    carried = {normalize_content_id(cid): f"cid:{normalize_content_id(cid)}" for cid in carried_content_ids}
    cleaned = sanitize_email_html(source, inline_image_urls=carried, allow_remote_images=True).html
    return cleaned + (f"<p>[... cut after {limit:,} characters]</p>" if cut else "")


def quote_html(
    original: Original, *, carried_content_ids: Iterable[str] = (), limit: int = MAX_QUOTED_CHARS
) -> str:
    body = _original_html(original, carried_content_ids, limit)
    return (
        f"<p>{html.escape(attribution(original))}</p>"
        f'<blockquote type="cite" style="margin:0 0 0 .8ex;border-left:1px solid #ccc;padding-left:1ex">'
        f"{body}</blockquote>"
    )


def forward_html(
    original: Original, *, carried_content_ids: Iterable[str] = (), limit: int = MAX_QUOTED_CHARS
) -> str:
    rows = "".join(
        f"{html.escape(name)}: {html.escape(value)}<br>" for name, value in forward_headers(original)
    )
    body = _original_html(original, carried_content_ids, limit)
    return f"<div>{html.escape(FORWARD_MARKER)}<br>{rows}</div><br>{body}"


def text_as_html(text: str) -> str:
    """What the agent typed (plain text) as the HTML part: escaped, line breaks kept."""
    return '<div style="white-space:pre-wrap">' + html.escape(text.replace("\r\n", "\n")) + "</div>"


# -- thread headers --------------------------------------------------------------------------------


def _usable_msg_id(value: str) -> str:
    ids = msg_ids(value or "")
    if not ids:
        return ""
    first = ids[0]
    if len(first) > MAX_MSG_ID_CHARS or not first.isascii() or not first.isprintable():
        return ""
    return first


def thread_headers(original: Original) -> tuple[str, list[str]]:
    """(In-Reply-To, References) of an answer (RFC 5322 §3.6.4): In-Reply-To is the original's
    Message-ID; References the original's References plus its Message-ID, trimmed like storing
    trims them (the first and the newest). Unusable ids are left out, never cut."""
    message_id = _usable_msg_id(original.message_id)
    references = [ref for ref in (_usable_msg_id(value) for value in original.references) if ref]
    if message_id:
        references = [ref for ref in references if ref != message_id] + [message_id]
    if len(references) > MAX_REFERENCES:
        references = [references[0], *references[-(MAX_REFERENCES - 1) :]]
    return message_id, references


# -- the message -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutgoingAttachment:
    filename: str
    content_type: str
    data: bytes
    content_id: str = ""  # an inline part the quoted HTML refers to (`cid:`), carried along


_CONTENT_TYPE = re.compile(r"^[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+$")


def _content_type(attachment: OutgoingAttachment) -> tuple[str, str]:
    content_type = (attachment.content_type or "").strip().lower()
    if not _CONTENT_TYPE.match(content_type):
        content_type = mimetypes.guess_type(attachment.filename)[0] or "application/octet-stream"
    maintype, _, subtype = content_type.partition("/")
    return maintype, subtype


def attachment_filename(name: str) -> str:
    """The filename parameter an attachment is sent with. The email library decodes RFC 2047
    encoded words in a parameter value when it writes it, so a filename that is an encoded word
    of CR LF (an upload's name, or a forwarded file's stored name, which our parser decoded only
    once) would start headers, or the body, of the MIME part. Decoded and cleaned the way header
    values are (`one_line`), then any `=?` left over, which no real filename needs, is broken up
    so that no later decoding can find an encoded word in it."""
    cleaned = sanitize_filename(one_line(name)).replace("=?", "= ?")
    return cleaned or "attachment"


def _header_pairs(pairs: Sequence[Pair]) -> str:
    return ", ".join(format_pair(pair) for pair in pairs)


def answer_message_build(
    *,
    from_name: str,
    from_address: str,
    to: Sequence[Pair],
    cc: Sequence[Pair],
    subject: str,
    date: datetime,
    message_id: str,
    in_reply_to: str,
    references: Sequence[str],
    text: str,
    html_body: str,
    attachments: Sequence[OutgoingAttachment] = (),
) -> bytes:
    """The exact bytes of an answer: text/plain + text/html alternative, then the attachments.

    7-bit throughout (quoted-printable text, base64 files, RFC 2047 encoded words and RFC 2231
    filenames), so no SMTP server refuses it for lack of 8BITMIME. Every header value is one line
    (`one_line`), every address a valid addr-spec: nothing from the original or from the form can
    start a header of its own. Bcc is never written (RFC 5322 §3.6.3): it is only in the envelope.
    """
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = format_pair((from_name, sendable_address(from_address) or from_address))
    to, cc = _clean_pairs(to, sendable=True), _clean_pairs(cc, sendable=True)
    if to:
        message["To"] = _header_pairs(to)
    if cc:
        message["Cc"] = _header_pairs(cc)
    message["Subject"] = one_line(subject)
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
    if references:
        message["References"] = " ".join(references)
    message.set_content(text, cte="quoted-printable")
    message.add_alternative(html_body, subtype="html", cte="quoted-printable")
    for attachment in attachments:
        maintype, subtype = _content_type(attachment)
        filename = attachment_filename(attachment.filename)
        content_id = one_line(attachment.content_id).strip("<> ")
        message.add_attachment(
            attachment.data,
            maintype=maintype,
            subtype=subtype,
            filename=filename,
            cte="base64",
            cid=f"<{content_id}>" if content_id else None,
        )
    return message.as_bytes(policy=SMTP_POLICY)
