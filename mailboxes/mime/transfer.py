"""Content-Transfer-Encoding that the stdlib decodes too strictly (RFC 2045 §6.8 base64)."""

from __future__ import annotations

import binascii
import re


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
