"""Sender-chosen attachment filenames made safe to show and to store."""

from __future__ import annotations

import re
import unicodedata

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
