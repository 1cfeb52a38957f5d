"""Raw RFC 5322 / MIME bytes -> :class:`ParsedEmail`. Pure: no Django, no database, no I/O.

Real-world mail is hostile, so :func:`parse_email` never raises: it returns the best result it can
and lists what went wrong in ``ParsedEmail.problems`` (the caller keeps the raw original anyway).

The MIME tree is built by the stdlib parser (``email.policy.default``, fed in chunks, with header
values capped before its superlinear structured-header parsers see them), but header values are
decoded from the raw stored text by :mod:`mailboxes.mime`: the policy's header objects raise
on some garbage (``Message-ID: <>`` is an IndexError) and turn undecodable bytes into U+FFFD,
where we want utf-8 -> cp1252 fallbacks and a recorded problem. Body choice follows the
algorithm mail readers use, as specified for JMAP in RFC 8621 §4.1.4.
"""

from __future__ import annotations

import binascii
import functools
import mimetypes
import re
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.feedparser import BytesFeedParser
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import Message
from email.parser import BytesParser
from email.policy import Policy
from urllib.parse import unquote

from mailboxes import limits
from mailboxes.mime.charsets import clean, decode_bytes, strip_controls
from mailboxes.mime.fields import msg_ids, parse_addresses, parse_date
from mailboxes.mime.filenames import sanitize_filename
from mailboxes.mime.headers import decode_header_text, fold_whitespace, header_value, unfold_header
from mailboxes.mime.html_text import html_to_text, meta_charset, text_to_html
from mailboxes.mime.params import parse_params
from mailboxes.mime.transfer import decode_base64

__all__ = ["ParsedAddress", "ParsedAttachment", "ParsedEmail", "parse_email"]

MAX_DEPTH = 40  # deeper than any real client nests; deeper parts are skipped (with a problem)
MAX_HEADER_PARSE = 16 * 1024
_MIME = mimetypes.MimeTypes()  # its built-in table only: the same extensions on every host
_CONTENT_TYPE = re.compile(r"^[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+$")
_CID_REF = re.compile(r"""cid:([^"'\s>)]+)""", re.IGNORECASE)
_OBS_FIELD_NAME = re.compile(rb"(?m)^([!-9;-~]+)[ \t]+:")
_BODY_TYPES = ("text/plain", "text/html")
_CHUNK = 1 << 16
_CACHED_HEADER_CHARS = 512


class _BoundedHeaders(HeaderRegistry):
    """policy.default's header registry, fed at most MAX_HEADER_PARSE characters per value.

    Its structured-header parsers are superlinear (a 1 MB Content-Type of "a=b; " repeated takes
    minutes), and the feedparser consults Content-Type for every part. Our own readers always
    use the full raw value; if a boundary lies beyond the cut, _children() recovers it.
    """

    def __call__(self, name: str, value: str) -> BaseHeader:
        value = value[:MAX_HEADER_PARSE]
        if len(value) <= _CACHED_HEADER_CHARS:
            return self._parsed(name, value)
        return super().__call__(name, value)

    # The feedparser asks for a part's Content-Type again and again (get_content_maintype on
    # every line boundary check), and policy.default parses the header anew each time: that was
    # a third of all ingest time. Header objects are immutable, so one parse per value is shared
    # (short values only, so that hostile headers can't pin much memory in the cache).
    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one registry for the process, never freed
    def _parsed(self, name: str, value: str) -> BaseHeader:
        return super().__call__(name, value)


_POLICY = policy.default.clone(header_factory=_BoundedHeaders())


@dataclass(frozen=True)
class ParsedAddress:
    name: str  # decoded display name, "" if none
    address: str  # "local@domain", "" if unparseable


@dataclass
class ParsedAttachment:
    filename: str  # decoded and sanitized; generated ("attachment-3.pdf") if the sender gave none
    content_type: str  # lowercased "type/subtype"
    payload: bytes  # transfer encoding undone
    content_id: str  # without angle brackets, "" if none
    is_inline: bool  # Content-Disposition inline, or referenced by cid: from the HTML body

    @property
    def size(self) -> int:
        return len(self.payload)


@dataclass
class ParsedEmail:
    message_id: str = ""
    in_reply_to: str = ""
    references: list[str] = field(default_factory=list)
    subject: str = ""
    from_name: str = ""
    from_address: str = ""
    to: list[ParsedAddress] = field(default_factory=list)
    cc: list[ParsedAddress] = field(default_factory=list)
    reply_to: list[ParsedAddress] = field(default_factory=list)
    date: datetime | None = None
    text_body: str = ""
    html_body: str = ""
    attachments: list[ParsedAttachment] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def empty(cls, problem: str) -> ParsedEmail:
        """Result for a message nothing could be read from (the raw original is stored anyway)."""
        return cls(problems=[problem])

    def header(self, name: str) -> str:
        """First value of header ``name`` (case-insensitive), "" if absent."""
        return header_value(self.headers, name)


def parse_email(raw: bytes) -> ParsedEmail:
    """Parse ``raw``, a complete message as received. Never raises."""
    problems: list[str] = []
    try:
        return _Parser(bytes(raw), problems).run()
    except Exception as exc:  # noqa: BLE001 - the contract is "never raise"; the raw mail is kept
        problems.append(f"parser failed ({type(exc).__name__}: {exc}); the result is incomplete")
        return ParsedEmail(problems=_dedupe(problems))


@dataclass
class _Part:
    """A leaf (or multipart) of the tree with its MIME headers already decoded."""

    msg: Message
    section: str  # "1" is the whole message, "1.2" its second part...: for problem messages
    content_type: str
    params: dict[str, str]
    disposition: str  # "inline", "attachment" or ""
    filename: str  # decoded, not yet sanitized
    content_id: str
    cte: str  # Content-Transfer-Encoding, lowercased first token


class _Parser:
    def __init__(self, raw: bytes, problems: list[str]) -> None:
        self.raw = raw
        self.problems = problems
        # Attached messages are written back with the original line ends, headers not refolded.
        linesep = "\r\n" if raw.count(b"\r\n") * 2 > raw.count(b"\n") else "\n"
        self.out_policy = _POLICY.clone(refold_source="none", linesep=linesep)
        self.leaves: list[_Part] = []  # every non-multipart part, in order
        self.text_parts: list[_Part] = []  # RFC 8621 textBody
        self.html_parts: list[_Part] = []  # RFC 8621 htmlBody
        self._texts: dict[int, str] = {}
        self._parts_seen = 0

    def run(self) -> ParsedEmail:
        if not self.raw or self.raw.isspace():
            self.problems.append("empty message")
        msg = self._parse_tree()
        result = ParsedEmail()
        if msg is None:  # at least the header block, which cannot nest
            self.problems.append("MIME structure unreadable: only the headers were read")
            head = self.raw[: _header_end(self.raw)]
            self._read_headers(BytesParser(policy=_POLICY).parsebytes(head, headersonly=True), result)
        else:
            self._read_headers(msg, result)
            self._structure([msg], "mixed", False, self.html_parts, self.text_parts, "", 0)
            self._bodies(result)
            self._attachments(result)
        result.problems = _dedupe(self.problems)
        return result

    def _parse_tree(self) -> Message | None:
        """The stdlib tree; with compat32 rules if policy.default chokes; None if both fail."""
        self.raw = _repair_field_names(self.raw, self.problems)
        for message_policy in (_POLICY, policy.compat32):
            try:
                return _feed(self.raw, message_policy)
            except Exception as exc:  # noqa: BLE001 - e.g. RecursionError for parts nested 500 deep
                self.problems.append(
                    f"MIME parser failed with {message_policy.__class__.__name__} rules ({exc!r:.80})"
                )
        return None

    # -- headers -------------------------------------------------------------------------------

    def _text(self, raw: str, where: str) -> str:
        return decode_header_text(unfold_header(raw, where, self.problems), where, self.problems)

    def _read_headers(self, msg: Message, result: ParsedEmail) -> None:
        first: dict[str, str] = {}
        fields = _raw_headers(msg)
        for raw_name, raw_value in fields[: limits.MAX_HEADERS]:
            name = fold_whitespace(self._text(raw_name[:200], "header name"))
            value = self._text(raw_value[: limits.MAX_HEADER_VALUE_CHARS], f"{name} header").strip()
            result.headers.append((name, value))
        if len(fields) > limits.MAX_HEADERS:
            self.problems.append(
                f"{len(fields) - limits.MAX_HEADERS} header fields beyond the first "
                f"{limits.MAX_HEADERS} not kept (the raw original has them)"
            )
        # The fields that the product reads are looked up among all of them, not only those kept.
        for raw_name, raw_value in fields:
            first.setdefault(raw_name.strip().lower(), raw_value)
        for name in ("From", "Date", "Message-ID"):  # RFC 5322 §3.6: From and Date are required
            if name.lower() not in first:
                self.problems.append(f"missing {name} header")
        result.subject = fold_whitespace(self._text(first.get("subject", ""), "Subject header"))
        if "message-id" in first:
            ids = msg_ids(self._text(first["message-id"], "Message-ID header"))
            result.message_id = ids[0] if ids else ""
            if not ids:
                self.problems.append(f"unparseable Message-ID header {first['message-id'][:80]!r}")
        result.in_reply_to = next(iter(msg_ids(self._text(first.get("in-reply-to", ""), "In-Reply-To"))), "")
        result.references = msg_ids(self._text(first.get("references", ""), "References header"))
        if "date" in first:
            result.date = parse_date(fold_whitespace(self._text(first["date"], "Date header")), self.problems)
        lists = {}
        for name in ("From", "To", "Cc", "Reply-To"):
            where = f"{name} header"
            raw = first.get(name.lower())
            pairs = (
                parse_addresses(unfold_header(raw, where, self.problems), where, self.problems) if raw else []
            )
            lists[name] = [ParsedAddress(name=n, address=a) for n, a in pairs]
        if lists["From"]:
            result.from_name, result.from_address = lists["From"][0].name, lists["From"][0].address
        result.to, result.cc, result.reply_to = lists["To"], lists["Cc"], lists["Reply-To"]

    def _part(self, msg: Message, section: str) -> _Part:
        where = f"part {section}"
        raw_type = unfold_header(_raw(msg, "content-type"), where, self.problems)
        declared, params = parse_params(raw_type, where, self.problems)
        declared = declared.lower()
        try:  # the stdlib knows the defaults (text/plain; message/rfc822 inside multipart/digest)
            content_type = msg.get_content_type()
        except Exception as exc:  # noqa: BLE001 - policy.default header objects can raise on garbage
            self.problems.append(f"{where}: Content-Type not readable by the stdlib ({type(exc).__name__})")
            content_type = ""
        if not _CONTENT_TYPE.match(content_type):
            # RFC 2045 §5.2: an invalid Content-Type means text/plain, unless our lenient reading
            # found a valid one ("multipart/mixed boundary=..." without the ";").
            content_type = declared if _CONTENT_TYPE.match(declared) else "text/plain"
        if raw_type and not _CONTENT_TYPE.match(declared):
            self.problems.append(f"{where}: invalid Content-Type {declared[:60]!r}, read as {content_type}")
        raw_disposition = unfold_header(_raw(msg, "content-disposition"), where, self.problems)
        disposition, disposition_params = parse_params(raw_disposition, where, self.problems)
        cte = unfold_header(_raw(msg, "content-transfer-encoding"), where, self.problems).strip().lower()
        return _Part(
            msg=msg,
            section=section,
            content_type=content_type,
            params=params,
            disposition=disposition.lower(),
            filename=disposition_params.get("filename") or params.get("name", ""),
            content_id=unfold_header(_raw(msg, "content-id"), where, self.problems)
            .strip()
            .strip("<>")
            .strip(),
            cte=re.split(r"[\s;(]", cte, maxsplit=1)[0],
        )

    # -- structure: RFC 8621 §4.1.4 parseStructure ---------------------------------------------

    def _structure(
        self,
        parts: list[Message],
        multipart_type: str,
        in_alternative: bool,
        html_body: list[_Part] | None,
        text_body: list[_Part] | None,
        prefix: str,
        depth: int,
    ) -> None:
        text_length = len(text_body) if text_body is not None else -1
        html_length = len(html_body) if html_body is not None else -1
        for index, msg in enumerate(parts):
            section = f"{prefix}{index + 1}"
            self._parts_seen += 1
            if self._parts_seen > limits.MAX_MIME_PARTS:
                # Each part costs parsing and decoding: a message of 100,000 tiny parts must not
                # hold the batch for minutes. The raw original keeps the rest.
                self.problems.append(
                    f"more than {limits.MAX_MIME_PARTS} MIME parts: the parts from {section} on were not read"
                )
                return
            part = self._part(msg, section)
            self.problems.extend(_describe(defect, section) for defect in getattr(msg, "defects", []))
            ctype = part.content_type
            if ctype.startswith("multipart/"):
                children = self._children(part, depth)
                if children is not None:
                    sub = ctype.split("/", 1)[1]
                    nested = in_alternative or sub == "alternative"
                    self._structure(children, sub, nested, html_body, text_body, f"{section}.", depth + 1)
                    continue
                if msg.is_multipart():
                    continue  # too deep: skipped, problem recorded by _children
                # RFC 2046 §5.1.1 needs a boundary; without one the text is all a reader can show.
                self.problems.append(f"part {section}: {ctype} without a usable boundary, read as text")
                part.content_type = ctype = "text/plain"
            self.leaves.append(part)
            media = ctype.split("/", 1)[0] in ("image", "audio", "video")
            is_inline = (
                part.disposition != "attachment"
                and (ctype in _BODY_TYPES or media)
                and (index == 0 or (multipart_type != "related" and (media or not part.filename)))
            )
            if not is_inline:
                continue
            if multipart_type == "alternative":
                if ctype == "text/plain" and text_body is not None:
                    text_body.append(part)
                elif ctype == "text/html" and html_body is not None:
                    html_body.append(part)
                continue
            if in_alternative:  # inside one alternative: this view only
                if ctype == "text/plain":
                    html_body = None
                if ctype == "text/html":
                    text_body = None
            if text_body is not None:
                text_body.append(part)
            if html_body is not None:
                html_body.append(part)
        if multipart_type == "alternative" and text_body is not None and html_body is not None:
            # Only one of the alternatives was found: it serves both views.
            if text_length == len(text_body) and html_length != len(html_body):
                text_body.extend(html_body[html_length:])
            if html_length == len(html_body) and text_length != len(text_body):
                html_body.extend(text_body[text_length:])

    def _children(self, part: _Part, depth: int) -> list[Message] | None:
        if part.msg.is_multipart():
            if depth < MAX_DEPTH:
                return list(part.msg.get_payload())
            self.problems.append(f"part {part.section}: nested deeper than {MAX_DEPTH} levels, skipped")
            return None
        # Our lenient parameter parser may have found the boundary the stdlib missed (typically
        # "multipart/mixed boundary=..." without the ";", RFC 2045 §5.1): read the part again.
        boundary = part.params.get("boundary", "")
        body = _raw_body(part.msg)
        if not boundary or not isinstance(body, str):
            return None
        quoted = boundary.replace("\\", "\\\\").replace('"', '\\"')
        head = f'Content-Type: {part.content_type}; boundary="{quoted}"\n\n'.encode("utf-8", "replace")
        fixed = _feed(head + body.encode("ascii", "surrogateescape"), _POLICY)
        if not fixed.is_multipart():
            return None
        self.problems.append(f"part {part.section}: malformed Content-Type, boundary recovered")
        return list(fixed.get_payload())

    # -- bodies --------------------------------------------------------------------------------

    def _decoded_text(self, part: _Part) -> str:
        if id(part) not in self._texts:
            data = self._payload(part)
            charset = part.params.get("charset")
            if not charset and part.content_type == "text/html":
                charset = meta_charset(data)
            text = decode_bytes(data, charset, f"part {part.section}", self.problems)
            self._texts[id(part)] = strip_controls(text)
        return self._texts[id(part)]

    def _bodies(self, result: ParsedEmail) -> None:
        def shown(parts: list[_Part]) -> list[_Part]:
            return [p for p in parts if p.content_type in _BODY_TYPES and not _blank(self._decoded_text(p))]

        texts = [
            self._decoded_text(p) if p.content_type == "text/plain" else html_to_text(self._decoded_text(p))
            for p in shown(self.text_parts)
        ]
        # Several inline text parts are one body, each starting on its own line.
        last = len(texts) - 1
        result.text_body = "".join(
            t if i == last or t.endswith("\n") else t + "\n" for i, t in enumerate(texts)
        )
        htmls = shown(self.html_parts)
        if any(p.content_type == "text/html" for p in htmls):
            result.html_body = "\n".join(
                self._decoded_text(p)
                if p.content_type == "text/html"
                else text_to_html(self._decoded_text(p))
                for p in htmls
            )
        if _blank(result.text_body) and result.html_body:
            result.text_body = html_to_text(result.html_body)

    # -- attachments ---------------------------------------------------------------------------

    def _attachments(self, result: ParsedEmail) -> None:
        in_body = {id(p) for p in self.text_parts + self.html_parts if p.content_type in _BODY_TYPES}
        cids = {unquote(ref) for ref in _CID_REF.findall(result.html_body)}
        cids |= {cid.lower() for cid in cids}
        candidates = [part for part in self.leaves if id(part) not in in_body]
        if len(candidates) > limits.MAX_ATTACHMENTS:
            self.problems.append(
                f"{len(candidates)} attachments: only the first {limits.MAX_ATTACHMENTS} were extracted "
                "(the raw original has all of them)"
            )
        for part in candidates[: limits.MAX_ATTACHMENTS]:
            number = len(result.attachments) + 1
            fallback = f"attachment-{number}{_MIME.guess_extension(part.content_type) or '.bin'}"
            if part.content_type.startswith("message/") or part.msg.is_multipart():
                payload, subject = self._message_payload(part)
                if part.content_type in ("message/rfc822", "message/global"):
                    fallback = sanitize_filename(f"{subject}.eml") if subject else f"attachment-{number}.eml"
            else:
                payload = self._payload(part)
            cid = part.content_id
            result.attachments.append(
                ParsedAttachment(
                    filename=sanitize_filename(part.filename) or fallback,
                    content_type=part.content_type,
                    payload=payload,
                    content_id=cid,
                    is_inline=part.disposition == "inline"
                    or bool(cid and (cid in cids or cid.lower() in cids)),
                )
            )

    def _payload(self, part: _Part) -> bytes:
        """A leaf's body with the Content-Transfer-Encoding (RFC 2045 §6) undone."""
        body = _raw_body(part.msg)
        if part.cte == "base64" and isinstance(body, str):
            data, damaged = decode_base64(body)
            if damaged:
                self.problems.append(f"part {part.section}: damaged base64, decoded what was readable")
            return data
        if part.cte == "quoted-printable" and isinstance(body, str):
            return binascii.a2b_qp(body.encode("ascii", "surrogateescape"))
        decoded: object
        try:  # 7bit / 8bit / binary, and x-uuencode which the stdlib also undoes
            decoded = part.msg.get_payload(decode=True)
        except Exception as exc:  # noqa: BLE001 - one damaged part must not lose the whole mail
            self.problems.append(f"part {part.section}: undecodable body ({type(exc).__name__}), kept raw")
            decoded = None
        if isinstance(decoded, bytes):
            return decoded
        return body.encode("ascii", "surrogateescape") if isinstance(body, str) else b""

    def _message_payload(self, part: _Part) -> tuple[bytes, str]:
        """An attached message (RFC 2046 §5.2) as ONE attachment: its bytes and decoded subject."""
        body = _raw_body(part.msg)
        if not isinstance(body, list):
            return self._payload(part), ""
        try:
            data = b"".join(self._serialise(sub) for sub in body)
        except Exception as exc:  # noqa: BLE001 - writing back a damaged nested message can fail
            self.problems.append(
                f"part {part.section}: attached message not serialisable ({type(exc).__name__})"
            )
            return b"", ""
        subject = _raw(body[0], "subject") if body else ""
        if part.cte in ("base64", "quoted-printable"):
            # RFC 2046 §5.2.1 forbids encoding message/rfc822, but Exchange does it anyway.
            self.problems.append(f"part {part.section}: {part.cte}-encoded attached message, decoded")
            data = binascii.a2b_qp(data) if part.cte == "quoted-printable" else decode_base64(data)[0]
            head = re.split(rb"\r?\n\r?\n", data[:65536], maxsplit=1)[0]
            subject = _raw(BytesParser(policy=policy.default).parsebytes(head, headersonly=True), "subject")
        return data, fold_whitespace(self._text(subject, f"part {part.section} Subject"))

    def _serialise(self, msg: Message) -> bytes:
        """A parsed nested message back to bytes, as close to the original as the stdlib allows."""
        data = msg.as_bytes(policy=self.out_policy)
        sep = self.out_policy.linesep.encode()
        # The generator always writes a blank line after the header block; the original had none
        # when there were no headers (junk attached as a message) or no body.
        if not msg.keys() and data.startswith(sep):
            data = data[len(sep) :]
        elif _raw_body(msg) == "" and data.endswith(sep + sep):
            data = data[: -len(sep)]
        return data


def _feed(raw: bytes, message_policy: Policy) -> Message:
    """Parse in chunks. ``BytesParser.parsebytes`` would first decode the whole message to one
    str and wrap it in a StringIO (4 bytes per character): ~5x the size of a big attachment."""
    parser = BytesFeedParser(policy=message_policy)
    view = memoryview(raw)
    for start in range(0, len(raw), _CHUNK):
        parser.feed(bytes(view[start : start + _CHUNK]))
    return parser.close()


def _blank(text: str) -> bool:
    return not text or text.isspace()  # no stripped copy of a big body


def _dedupe(problems: list[str]) -> list[str]:
    return list(dict.fromkeys(clean(problem) for problem in problems))


def _raw_headers(msg: Message) -> list[tuple[str, str]]:
    """Header names and values exactly as parsed, bypassing policy.default's header objects."""
    return [(str(name), str(value)) for name, value in msg.raw_items()]


def _raw(msg: Message, name: str) -> str:
    """The first raw value of header ``name``, "" if absent."""
    return header_value(_raw_headers(msg), name)


def _raw_body(msg: Message) -> str | list[Message]:
    """The body exactly as parsed: text with 8-bit bytes as surrogate escapes, or sub-messages.

    ``get_payload()`` already decodes 8-bit bytes with ``errors="replace"``, losing them before
    the quoted-printable or charset decoding can see them; hence the attribute.
    """
    body = getattr(msg, "_payload", None)
    return body if isinstance(body, str | list) else ""


def _header_end(raw: bytes) -> int:
    """Offset just past the header block (RFC 5322 §2.1: it ends at the first empty line)."""
    ends = [i for i in (raw.find(b"\n\n"), raw.find(b"\n\r\n")) if i >= 0]
    return min(ends) + 1 if ends else len(raw)


def _repair_field_names(raw: bytes, problems: list[str]) -> bytes:
    """Accept "Subject : x" (obsolete syntax, RFC 5322 §4.5.3: whitespace before the colon).

    The stdlib parser takes such a line as the start of the body and loses every header after it.
    Only the header block is scanned, and the message is copied only when a repair is needed.
    """
    end = _header_end(raw)
    fixed, count = _OBS_FIELD_NAME.subn(rb"\1:", raw[:end])
    if not count:
        return raw
    problems.append("whitespace between a header name and its colon (obsolete syntax) removed")
    return fixed + raw[end:]


def _describe(defect: Exception, section: str) -> str:
    """A stdlib MessageDefect as a sentence: its message, or the first line of its docstring."""
    text = fold_whitespace(str(defect) or (type(defect).__doc__ or "").strip().split("\n")[0])
    return f"part {section}: {text[:120].rstrip('.')} ({type(defect).__name__})"
