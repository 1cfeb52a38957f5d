"""MIME parameters of Content-Type / Content-Disposition (RFC 2045 §5.1, RFC 2231)."""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from .charsets import decode_bytes
from .headers import decode_header_text

_RFC2231_NAME = re.compile(r"^([^*]+)\*(?:(\d{1,5})\*?|)$")


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
