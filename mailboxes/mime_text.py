"""Lenient text decoding for hostile e-mail: charsets, header text, MIME parameters, HTML -> text.

Pure helpers for :mod:`mailboxes.parsing` (no Django, no I/O). Nothing here raises for bad input:
every function returns its best guess and appends a human-readable note to ``problems`` when it had
to guess, so the loss is visible to whoever reads the parse result.
"""

from __future__ import annotations

import binascii
import codecs
import html
import re
import unicodedata
from datetime import UTC, datetime
from email import policy
from email.utils import getaddresses, parsedate_to_datetime
from urllib.parse import unquote_to_bytes

# Labels that Python does not know, or knows only as a narrower charset than the one senders
# actually use (WHATWG Encoding Standard: browsers and mail readers decode these as the superset).
_LABEL_ALIASES = {
    "iso-8859-8-i": "iso8859-8",
    "iso-8859-6-i": "iso8859-6",
    "windows-874": "cp874",
    "x-sjis": "cp932",
    "x-mac-roman": "mac-roman",
    "x-gbk": "gb18030",
    "unicode-2-0-utf-8": "utf-8",
    "x-unicode20utf8": "utf-8",
}
# Keyed by Python's canonical codec name -> codecs tried in order (strictly).
_SUPERSETS = {
    "iso8859-1": ("cp1252", "latin-1"),  # Outlook labels cp1252 text (smart quotes, euro) latin-1
    "gb2312": ("gb18030",),
    "gbk": ("gb18030",),
    "euc_kr": ("cp949",),
    "shift_jis": ("cp932",),
    "tis-620": ("cp874",),
}
# Codecs that exist in Python but are not charsets a mail can legitimately declare.
_NOT_CHARSETS = {"undefined", "unicode-escape", "raw-unicode-escape", "idna", "punycode", "mbcs", "oem"}
# Charsets whose text is mostly ASCII-compatible Latin: a cp1252 fallback is a sensible guess for
# them. For anything else (CJK, Cyrillic, ...) falling back to cp1252 would turn the whole text
# into mojibake, so we keep the declared charset and let errors="replace" mark the damage.
_WESTERN = {"ascii", "utf-8", "cp1252", "latin-1", "iso8859-1", "iso8859-15", "utf-7"}

_CONTROL_EXCEPT_WS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ANY_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def clean(text: str) -> str:
    """Any str -> storable text: lone surrogates replaced, NUL removed."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


def strip_controls(text: str) -> str:
    """Body text: "\n" line ends; NUL and other C0 controls except tab and newline dropped."""
    return _CONTROL_EXCEPT_WS.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def _codecs_for(label: str) -> tuple[str, ...] | None:
    """Python codecs to try for a declared charset label, or None if it is unknown/unusable."""
    label = _LABEL_ALIASES.get(label, label)
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError, TypeError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        return None  # e.g. charset="base64" or "rot13": a codec, but not a text encoding
    return _SUPERSETS.get(info.name, (info.name,))


def normalize_charset(charset: str | None) -> str:
    return (charset or "").strip().strip("\"';").strip().lower()


def decode_bytes(data: bytes, charset: str | None, where: str, problems: list[str]) -> str:
    """Decode ``data`` declared as ``charset``: declared -> utf-8 -> cp1252, never raising.

    RFC 2045 §5.2 makes us-ascii the default when no charset is declared; real mail with 8-bit
    bytes and no (or a wrong) label is usually utf-8 or Windows-1252, so those are tried next.
    Whenever a fallback was needed a problem is recorded. NUL characters are removed (they break
    databases and anything that treats text as C strings).
    """
    label = normalize_charset(charset)
    tried = _codecs_for(label) if label else None
    for codec in tried or ():
        try:
            return data.decode(codec).replace("\x00", "")
        except (UnicodeDecodeError, LookupError):
            continue
    text, how = _fallback_decode(data, tried[0] if tried else None)
    if label and tried is None:
        problems.append(f"unknown charset {label!r} in {where}, decoded as {how}")
    elif not label and how != "us-ascii":
        problems.append(f"no charset declared in {where}, decoded as {how}")
    elif label:
        problems.append(f"{where} is not valid {label}, decoded as {how}")
    return text.replace("\x00", "")


def _fallback_decode(data: bytes, declared: str | None) -> tuple[str, str]:
    if data.isascii():
        return data.decode("ascii"), "us-ascii"
    as_utf8 = data.decode("utf-8", "replace")
    bad = as_utf8.count("\ufffd")
    if not bad:
        return as_utf8, "utf-8"
    if declared and declared not in _WESTERN:
        return data.decode(declared, "replace"), f"{declared} with replacement"
    good = len(as_utf8) - len(as_utf8.encode("ascii", "ignore")) - bad
    if good > bad:  # mostly valid utf-8 with a few broken sequences: keep it, mark the damage
        return as_utf8, "utf-8 with replacement"
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:  # 0x81, 0x8D, 0x8F, 0x90, 0x9D are undefined in cp1252
        return data.decode("cp1252", "replace"), "cp1252 with replacement"


# ---------------------------------------------------------------------------------------------
# Header text
# ---------------------------------------------------------------------------------------------


def unfold(raw: str, where: str, problems: list[str]) -> str:
    """Raw header value as stored by the parser -> one line of text.

    RFC 5322 §2.2.3: unfolding removes a CRLF that is followed by whitespace. Raw 8-bit bytes
    (RFC 5322 forbids them, RFC 6532 allows utf-8) arrive as surrogate escapes from BytesParser
    and are decoded with the same utf-8 -> cp1252 fallback as bodies.
    """
    text = re.sub(r"\r?\n(?=[ \t])", "", raw)
    text = text.replace("\r", " ").replace("\n", " ")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text, how = _fallback_decode(text.encode("utf-8", "surrogateescape"), None)
        if how != "utf-8":  # RFC 6532 allows raw utf-8 in headers; anything else is a guess
            problems.append(f"raw 8-bit bytes in {where}, decoded as {how}")
    return text.replace("\x00", "")


# RFC 2047 §2 encoded-word. Lenient like mail readers: the text may contain spaces (RFC 2047
# forbids them but broken encoders emit them), and an RFC 2231 §5 language tag is allowed.
_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([QqBb])\?([^?]*)\?=")


def _word_bytes(encoding: str, text: str, charset: str) -> bytes | None:
    # Raw 8-bit bytes inside a word (seen from Outlook) were turned into text by unfold(); they
    # were meant in the word's own charset, so that is how they go back to bytes.
    try:
        data = text.encode("ascii" if text.isascii() else (_codecs_for(charset) or ("utf-8",))[0])
    except (UnicodeEncodeError, LookupError):
        data = text.encode("utf-8")
    try:
        if encoding in "Qq":
            return binascii.a2b_qp(data, header=True)  # RFC 2047 §4.2: "_" is a space
        data = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
        return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        return None


def _decode_runs(value: str, where: str, problems: list[str], reencode: bool) -> str:
    """Decode (or, with ``reencode``, normalise) every run of adjacent encoded-words.

    RFC 2047 §6.2: whitespace between adjacent encoded-words is not displayed. Adjacent words in
    the same charset are joined *as bytes* before decoding, because many senders split one
    multi-byte character across two words (a §5 violation every mail reader tolerates).
    """
    out: list[str] = []
    run: list[tuple[str, list[bytes]]] = []

    def flush() -> None:
        if not run:
            return
        text = "".join(decode_bytes(b"".join(chunks), cs, where, problems) for cs, chunks in run)
        if reencode:  # one utf-8 word that any RFC 2047 decoder (the stdlib's too) gets right
            text = "=?utf-8?b?" + binascii.b2a_base64(text.encode("utf-8"), newline=False).decode() + "?="
        out.append(text)
        run.clear()

    pos = 0
    for match in _ENCODED_WORD.finditer(value):
        gap = value[pos : match.start()]
        if not (run and gap.strip(" \t") == ""):
            flush()
            out.append(gap)
        pos = match.end()
        charset, encoding, text = match.groups()
        charset = normalize_charset(charset)
        data = _word_bytes(encoding, text, charset)
        if data is None:
            problems.append(f"{where}: undecodable encoded-word {match.group(0)[:60]!r} kept as is")
            flush()
            out.append(match.group(0))
            continue
        if run and run[-1][0] == charset:
            run[-1][1].append(data)
        else:
            run.append((charset, [data]))
    flush()
    out.append(value[pos:])
    return "".join(out)


def decode_header_text(value: str, where: str, problems: list[str]) -> str:
    """Decode RFC 2047 encoded-words in an unfolded header value and neutralise control chars.

    Control characters (notably CR/LF smuggled in via ``=0D=0A``) become spaces so a decoded
    value can never inject a header line when it is re-used in an outgoing message.
    """
    if "=?" in value:
        value = _decode_runs(value, where, problems, reencode=False)
    return header_safe(value)


def normalize_encoded_words(value: str, where: str, problems: list[str]) -> str:
    """Rewrite each run of encoded-words as one utf-8 encoded-word (for the stdlib address parser)."""
    return _decode_runs(value, where, problems, reencode=True) if "=?" in value else value


def fold_whitespace(text: str) -> str:
    return " ".join(text.split())


def header_safe(text: str) -> str:
    """Decoded header text that can never start a new header line: control chars -> space."""
    return _ANY_CONTROL.sub(" ", clean(text))


# ---------------------------------------------------------------------------------------------
# Structured header fields (RFC 5322 §3.3, §3.4, §3.6.4)
# ---------------------------------------------------------------------------------------------

MAX_STRICT_ADDRESSES = 32 * 1024
_MSG_ID = re.compile(r"<([^<>]*)>")
_ADDR_SPEC = re.compile(r"^[^\s@<>(),;:\[\]\\\"]+@[^\s@<>(),;:\\\"]+$")


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
        pairs = [(header_safe(a.display_name), a.addr_spec) for a in header.addresses]
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


# ---------------------------------------------------------------------------------------------
# MIME parameters (Content-Type / Content-Disposition)
# ---------------------------------------------------------------------------------------------


def _split_params(value: str) -> list[str]:
    """Split on ";" outside quoted strings (RFC 2045 §5.1 / RFC 5322 quoted-pair aware)."""
    parts: list[str] = []
    buf: list[str] = []
    quoted = escaped = False
    for ch in value:
        if escaped:
            buf.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            buf.append(ch)
            escaped = True
        elif ch == '"':
            buf.append(ch)
            quoted = not quoted
        elif ch == ";" and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    parts.append("".join(buf))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


_RFC2231_NAME = re.compile(r"^([^*]+)\*(?:(\d{1,5})\*?|)$")


def parse_params(value: str, where: str, problems: list[str]) -> tuple[str, dict[str, str]]:
    """``'text/plain; charset="utf-8"'`` -> ``("text/plain", {"charset": "utf-8"})``.

    Handles RFC 2231 continuations and ``charset'lang'%XX`` values (which win over a plain value
    of the same name), and RFC 2047 encoded-words inside quoted values, which RFC 2047 §5 forbids
    but Outlook and many webmailers emit for filenames. Parameter names are lowercased.
    """
    first, *rest = _split_params(value)
    # Missing ";" between the value and the first parameter ("multipart/mixed boundary=x"):
    # seen in the wild, and losing the boundary would lose the whole MIME structure.
    missing_semicolon = re.match(r"^\s*([^\s=]+)\s+([^\s=]+\s*=.*)$", first, re.DOTALL)
    if missing_semicolon:
        first = missing_semicolon.group(1)
        rest.insert(0, missing_semicolon.group(2))
    plain: dict[str, str] = {}
    extended: dict[str, list[tuple[int, str, bool]]] = {}
    for item in rest:
        name, sep, raw = item.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            continue
        match = _RFC2231_NAME.match(name)
        if match:
            encoded = name.endswith("*")
            extended.setdefault(match.group(1), []).append((int(match.group(2) or 0), _unquote(raw), encoded))
        else:
            plain.setdefault(name, _unquote(raw))
    for name, segments in extended.items():
        segments.sort(key=lambda seg: seg[0])
        charset = ""
        chunks: list[bytes] = []
        for index, (_, text, encoded) in enumerate(segments):
            if encoded:
                if index == 0 and text.count("'") >= 2:  # RFC 2231 §4: charset'language'octets
                    charset, _, text = text.split("'", 2)
                chunks.append(unquote_to_bytes(text))
            else:
                chunks.append(text.encode("utf-8", "surrogateescape"))
        plain[name] = decode_bytes(
            b"".join(chunks), charset or "utf-8", f"{where} parameter {name}", problems
        )
    for name, text in plain.items():
        if "=?" in text:
            plain[name] = decode_header_text(text, f"{where} parameter {name}", problems)
    return first.strip(), plain


def decode_base64(data: bytes | str) -> tuple[bytes, bool]:
    """Base64 body -> (bytes, damaged). Line breaks and junk characters are skipped and decoding
    stops at the padding, as a2b_base64 does; a damaged body (bad length, non-ASCII) yields what
    is readable (RFC 2045 §6.8 asks decoders to ignore characters outside the alphabet)."""
    try:  # one pass, no intermediate copy of a big payload
        return binascii.a2b_base64(data), False
    except (binascii.Error, ValueError):
        pass
    raw = data.encode("ascii", "surrogateescape") if isinstance(data, str) else data
    raw = re.sub(rb"[^A-Za-z0-9+/]", b"", raw.split(b"=", 1)[0])
    if len(raw) % 4 == 1:  # a single trailing character cannot hold a byte
        raw = raw[:-1]
    return binascii.a2b_base64(raw + b"=" * (-len(raw) % 4)), True


_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([a-z0-9_.:+-]+)""", re.IGNORECASE)


def meta_charset(data: bytes) -> str | None:
    """Charset of an HTML document from its <meta> tag (HTML's own fallback when MIME has none)."""
    match = _META_CHARSET.search(data[:4096])
    return match.group(1).decode("ascii") if match else None


# ---------------------------------------------------------------------------------------------
# Filenames
# ---------------------------------------------------------------------------------------------

MAX_FILENAME = 255


def sanitize_filename(name: str) -> str:
    """Make a sender-chosen filename safe to show and to store; "" if nothing usable is left.

    Drops control and Unicode format characters (bidi overrides such as U+202E are used to
    disguise ``evil\u202efdp.exe`` as ``evilexe.pdf``), keeps only the last path component (no
    ``../`` or ``C:\\`` traversal) and caps the length while keeping the extension.
    """
    name = unicodedata.normalize("NFC", name)
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf", "Cs"))
    name = re.split(r"[/\\]", name)[-1]
    name = " ".join(name.split()).strip(" .")
    if len(name) > MAX_FILENAME:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            name = stem[: MAX_FILENAME - len(ext) - 1].rstrip(" .") + "." + ext
        else:
            name = name[:MAX_FILENAME]
    return name


# ---------------------------------------------------------------------------------------------
# HTML -> text
# ---------------------------------------------------------------------------------------------

_BLOCK_TAGS = {
    "address", "article", "aside", "blockquote", "center", "dd", "div", "dl", "dt", "fieldset",
    "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr",
    "li", "main", "nav", "ol", "p", "pre", "section", "table", "tr", "ul",
}  # fmt: skip
# One pass of a regex tokenizer rather than html.parser: the stdlib parser is quadratic on
# inputs like "<!--" * 50000 (17 s for 200 kB on 3.11), which any sender can put in a mail.
# Every alternative ends at its terminator *or the end of the input*, so each token is scanned
# once and the whole conversion stays linear. Contents of script/style/title/template and
# Outlook's <xml> islands are not text a reader sees; an unterminated one hides the rest, as in
# a browser (they are raw-text/RCDATA elements in HTML5).
_HTML_TOKEN = re.compile(
    r"""
    <!--.*?(?:-->|\Z)
  | <(?P<hidden>script|style|title|template|xml)\b[^>]*(?:>|\Z).*?(?:</(?P=hidden)\s*>|\Z)
  | <(?P<close>/?)(?P<tag>[a-z][a-z0-9:-]*)[^>]*(?:>|\Z)
  | <[!?][^>]*(?:>|\Z)
    """,
    re.IGNORECASE | re.DOTALL | re.VERBOSE,
)


def html_to_text(html_text: str) -> str:
    """Plain text a reader sees in ``html_text``: tags stripped, block elements as line breaks,
    entities unescaped, script/style contents dropped. Linear time for any input."""
    chunks: list[str] = []
    pre = 0
    position = 0

    def add_text(raw: str) -> None:
        text = html.unescape(raw)
        chunks.append(text if pre else re.sub(r"\s+", " ", text))

    for token in _HTML_TOKEN.finditer(html_text):
        add_text(html_text[position : token.start()])
        position = token.end()
        tag = (token.group("tag") or "").lower()
        closing = token.group("close") == "/"
        if tag == "br":
            chunks.append("\n")
        elif tag in ("td", "th") and not closing:
            chunks.append(" ")
        elif tag in _BLOCK_TAGS:
            chunks.append("\n- " if tag == "li" and not closing else "\n")
            if tag == "pre":
                pre = max(0, pre - 1) if closing else pre + 1
    add_text(html_text[position:])
    lines = [line.strip(" \t") for line in "".join(chunks).replace("\xa0", " ").split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return _CONTROL_EXCEPT_WS.sub("", clean(text))


def text_to_html(text: str) -> str:
    """Plain text part shown inside an HTML body (mixed html + plain inline parts)."""
    return "<pre>" + html.escape(text) + "</pre>"
