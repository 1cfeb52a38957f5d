"""Charsets: declared label -> Python codec, and decoding that never raises (RFC 2045 §5.2)."""

from __future__ import annotations

import codecs
import re

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


def clean(text: str) -> str:
    """Any str -> storable text: lone surrogates replaced, NUL removed."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


def drop_controls(text: str) -> str:
    """NUL and the other C0 controls (and DEL) removed, except tab, newline and carriage return."""
    return _CONTROL_EXCEPT_WS.sub("", text)


def strip_controls(text: str) -> str:
    """Body text: "\n" line ends; NUL and other C0 controls except tab and newline dropped."""
    return drop_controls(text.replace("\r\n", "\n").replace("\r", "\n"))


def codecs_for(label: str) -> tuple[str, ...] | None:
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
    tried = codecs_for(label) if label else None
    for codec in tried or ():
        try:
            return data.decode(codec).replace("\x00", "")
        except (UnicodeDecodeError, LookupError):
            continue
    text, how = fallback_decode(data, tried[0] if tried else None)
    if label and tried is None:
        problems.append(f"unknown charset {label!r} in {where}, decoded as {how}")
    elif not label and how != "us-ascii":
        problems.append(f"no charset declared in {where}, decoded as {how}")
    elif label:
        problems.append(f"{where} is not valid {label}, decoded as {how}")
    return text.replace("\x00", "")


def fallback_decode(data: bytes, declared: str | None) -> tuple[str, str]:
    """Bytes that are not valid in their declared codec (or have none) -> (text, how decoded)."""
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
