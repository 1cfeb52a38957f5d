"""Header text: finding a field, unfolding it (RFC 5322 §2.2.3), RFC 2047 encoded-words."""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterable

from .charsets import clean, codecs_for, decode_bytes, fallback_decode, normalize_charset

_FOLDING = re.compile(r"\r?\n(?=[ \t])")
_ANY_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def header_values(headers: Iterable[tuple[str, str]], name: str) -> list[str]:
    """All values of header field ``name``, in order (field names are case-insensitive, RFC 5322
    §1.2.2). Blank-padded names and missing values (rows stored as JSON) are tolerated."""
    wanted = name.lower()
    return [value or "" for key, value in headers if (key or "").strip().lower() == wanted]


def header_value(headers: Iterable[tuple[str, str]], name: str) -> str:
    """The first value of header field ``name``, "" if there is none."""
    return next(iter(header_values(headers, name)), "")


def unfold(text: str) -> str:
    """RFC 5322 §2.2.3: unfolding removes each CRLF that is followed by whitespace."""
    return _FOLDING.sub("", text)


def unfold_header(raw: str, where: str, problems: list[str]) -> str:
    """Raw header value as stored by the parser -> one line of text.

    Unfolded (RFC 5322 §2.2.3), and any other line break becomes a space. Raw 8-bit bytes
    (RFC 5322 forbids them, RFC 6532 allows utf-8) arrive as surrogate escapes from BytesParser
    and are decoded with the same utf-8 -> cp1252 fallback as bodies.
    """
    text = unfold(raw).replace("\r", " ").replace("\n", " ")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text, how = fallback_decode(text.encode("utf-8", "surrogateescape"), None)
        if how != "utf-8":  # RFC 6532 allows raw utf-8 in headers; anything else is a guess
            problems.append(f"raw 8-bit bytes in {where}, decoded as {how}")
    return text.replace("\x00", "")


# RFC 2047 §2 encoded-word. Lenient like mail readers: the text may contain spaces (RFC 2047
# forbids them but broken encoders emit them), and an RFC 2231 §5 language tag is allowed.
_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([QqBb])\?([^?]*)\?=")


def _word_bytes(encoding: str, text: str, charset: str) -> bytes | None:
    # Raw 8-bit bytes inside a word (seen from Outlook) were turned into text by unfold_header();
    # they were meant in the word's own charset, so that is how they go back to bytes.
    try:
        data = text.encode("ascii" if text.isascii() else (codecs_for(charset) or ("utf-8",))[0])
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
    return controls_to_spaces(value)


def normalize_encoded_words(value: str, where: str, problems: list[str]) -> str:
    """Rewrite each run of encoded-words as one utf-8 encoded-word (for the stdlib address parser)."""
    return _decode_runs(value, where, problems, reencode=True) if "=?" in value else value


def fold_whitespace(text: str) -> str:
    return " ".join(text.split())


def controls_to_spaces(text: str) -> str:
    """Decoded header text that can never start a new header line: each run of control
    characters (CR and LF included) becomes one space; lone surrogates replaced, NUL removed."""
    return _ANY_CONTROL.sub(" ", clean(text))
