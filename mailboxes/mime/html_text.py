"""HTML bodies: their declared charset, the text a reader sees in them, plain text shown as HTML."""

from __future__ import annotations

import html
import re

from .charsets import clean, drop_controls

_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([a-z0-9_.:+-]+)""", re.IGNORECASE)


def meta_charset(data: bytes) -> str | None:
    """Charset of an HTML document from its <meta> tag (HTML's own fallback when MIME has none)."""
    match = _META_CHARSET.search(data[:4096])
    return match.group(1).decode("ascii") if match else None


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
    return drop_controls(clean(text))


def text_to_html(text: str) -> str:
    """Plain text part shown inside an HTML body (mixed html + plain inline parts)."""
    return "<pre>" + html.escape(text) + "</pre>"
