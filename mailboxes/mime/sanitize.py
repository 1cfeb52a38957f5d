"""Untrusted email HTML made safe to display.

Three layers, so one mistake is not enough for a sender to run code or track the reader:
1. this module: nh3 (ammonia) keeps an allow-list of tags, attributes, URL schemes and CSS
   properties, and rewrites images: remote ones are dropped until the reader asks for them
   (tracking pixels report who opened what and when), `cid:` ones (RFC 2392) point at an
   access-checked URL of the email's own attachment;
2. the page serving it sends `email_body_csp()`: no script at all, no network but ourselves
   (and, after "show images", remote images);
3. the staff page shows it in an `<iframe sandbox>` without `allow-scripts`.

Pure: no database and no request; the caller says where each inline image can be fetched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

import nh3

ALLOWED_TAGS = frozenset(
    {
        "a", "abbr", "address", "article", "b", "big", "blockquote", "br", "caption", "center",
        "cite", "code", "col", "colgroup", "dd", "del", "details", "dfn", "div", "dl", "dt", "em",
        "figcaption", "figure", "font", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header",
        "hr", "i", "img", "ins", "kbd", "li", "main", "mark", "ol", "p", "pre", "q", "s", "samp",
        "section", "small", "span", "strike", "strong", "sub", "summary", "sup", "table", "tbody",
        "td", "tfoot", "th", "thead", "time", "tr", "tt", "u", "ul", "var", "wbr",
    }
)  # fmt: skip

# Removed together with their content. Everything else not allowed (html, body, form, input,
# button, link, meta, base, ...) is removed too, but its text is kept.
REMOVED_WITH_CONTENT = frozenset(
    {
        "script", "style", "title", "iframe", "frame", "frameset", "object", "embed", "applet",
        "noscript", "noembed", "noframes", "template", "select", "textarea", "svg", "math", "xmp",
        "plaintext",
    }
)  # fmt: skip

_LAYOUT = {"align", "valign", "width", "height", "bgcolor"}
ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    "*": {"style", "dir", "lang", "title"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height", "border", "align"},
    "table": {*_LAYOUT, "border", "cellpadding", "cellspacing"},
    "tr": _LAYOUT,
    "td": {*_LAYOUT, "colspan", "rowspan", "nowrap"},
    "th": {*_LAYOUT, "colspan", "rowspan", "nowrap"},
    "col": {"span", "width", "align", "valign"},
    "colgroup": {"span", "width", "align", "valign"},
    "div": {"align"},
    "p": {"align"},
    "h1": {"align"},
    "h2": {"align"},
    "h3": {"align"},
    "font": {"color", "face", "size"},
    "ol": {"start", "type"},
    "hr": {"width", "size", "align"},
}

# Inline `style` attributes: properties that only lay out and colour text. Nothing that can
# fetch (url(), image-set(), @import), run (IE's expression(), -moz-binding, behavior) or escape
# the frame's box (position).
SAFE_CSS_PROPERTIES = frozenset(
    {
        "background-color", "border", "border-bottom", "border-bottom-color", "border-bottom-style",
        "border-bottom-width", "border-collapse", "border-color", "border-left", "border-left-color",
        "border-left-style", "border-left-width", "border-radius", "border-right",
        "border-right-color", "border-right-style", "border-right-width", "border-spacing",
        "border-style", "border-top", "border-top-color", "border-top-style", "border-top-width",
        "border-width", "clear", "color", "direction", "display", "float", "font", "font-family",
        "font-size", "font-style", "font-variant", "font-weight", "height", "letter-spacing",
        "line-height", "list-style-type", "margin", "margin-bottom", "margin-left", "margin-right",
        "margin-top", "max-height", "max-width", "min-height", "min-width", "overflow-wrap",
        "padding", "padding-bottom", "padding-left", "padding-right", "padding-top", "table-layout",
        "text-align", "text-decoration", "text-indent", "text-transform", "vertical-align",
        "white-space", "width", "word-break", "word-spacing",
    }
)  # fmt: skip
# A value is kept only if, once colour functions with plain numbers are taken out, it has no
# parenthesis, colon, backslash escape, comment or angle bracket left: no function can sneak in.
_CSS_COLOR_FUNCTION = re.compile(r"\b(?:rgba?|hsla?)\(\s*[\d.%,\s/]*\)", re.IGNORECASE)
_CSS_PLAIN_VALUE = re.compile(r"[#\w\s.,%'\"!+-]*")

URL_SCHEMES = frozenset({"http", "https", "mailto", "tel", "cid"})
_REMOTE = re.compile(r"^(?:https?:)?//", re.IGNORECASE)
_CID = re.compile(r"^cid:", re.IGNORECASE)

# The iframe document's own look: readable defaults, images never wider than the frame.
DOCUMENT_CSS = (
    "html{color-scheme:light}"
    "body{margin:16px;font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;"
    "color:#1f2328;background:#fff;overflow-wrap:anywhere}"
    "img{max-width:100%;height:auto}table{max-width:100%}"
    "pre{white-space:pre-wrap}blockquote{margin:0 0 0 .8em;padding-left:.8em;border-left:3px solid #d0d7de}"
    "a{color:#0b5cad}"
)


@dataclass(frozen=True)
class SanitizedHtml:
    html: str
    blocked_remote_images: int  # remote images dropped (0 when they were allowed)
    inline_images: int  # cid: images rewritten to an attachment URL


def clean_style(value: str) -> str | None:
    """Keep the safe declarations of a `style` attribute; None when none is left."""
    kept = []
    for declaration in value.split(";"):
        name, colon, css_value = declaration.partition(":")
        name, css_value = name.strip().lower(), css_value.strip()
        if colon and css_value and name in SAFE_CSS_PROPERTIES and _is_plain_css_value(css_value):
            kept.append(f"{name}: {css_value}")
    return "; ".join(kept) or None


def _is_plain_css_value(value: str) -> bool:
    if "\\" in value or "/*" in value:  # escapes and comments can spell any function name
        return False
    return _CSS_PLAIN_VALUE.fullmatch(_CSS_COLOR_FUNCTION.sub("", value)) is not None


def normalize_content_id(value: str) -> str:
    """A Content-ID as stored (RFC 2392: `cid:` URLs are %-encoded, headers are in <...>)."""
    return unquote(value).strip().strip("<>").strip().lower()


def sanitize_email_html(
    html: str, *, inline_image_urls: Mapping[str, str], allow_remote_images: bool
) -> SanitizedHtml:
    """Sanitize an email's HTML body for display in the sandboxed frame.

    `inline_image_urls` maps each inline attachment's Content-ID (normalized with
    `normalize_content_id`) to the URL that serves it; a `cid:` reference to anything else is
    dropped. Remote images (http, https, protocol-relative) are dropped and counted unless
    `allow_remote_images`. Relative URLs are dropped: in the frame they would point into mailhub.
    """
    cid_urls = {normalize_content_id(cid): url for cid, url in inline_image_urls.items()}
    produced_urls: set[str] = set()
    counts = {"blocked": 0, "inline": 0}

    def image_source(value: str) -> str | None:
        if _CID.match(value):
            url = cid_urls.get(normalize_content_id(value[4:]))
            if url is not None:
                produced_urls.add(url)
                counts["inline"] += 1
            return url
        if _REMOTE.match(value):
            if not allow_remote_images:
                counts["blocked"] += 1
                return None
            return "https:" + value if value.startswith("//") else value
        return None  # data:, relative, anything else: never fetched

    def attribute_filter(tag: str, attribute: str, value: str) -> str | None:
        if attribute == "style":
            return clean_style(value)
        if tag == "img" and attribute == "src":
            return image_source(value.strip())
        if tag == "a" and attribute == "href":
            href = value.strip()
            if _CID.match(href):
                return None
            return "https:" + href if href.startswith("//") else href
        return value

    cleaner = nh3.Cleaner(
        tags=set(ALLOWED_TAGS),
        clean_content_tags=set(REMOVED_WITH_CONTENT),
        attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
        attribute_filter=attribute_filter,
        url_schemes=set(URL_SCHEMES),
        # Only the attachment URLs produced above may be relative; any other relative URL would
        # make the reader's browser request a mailhub page.
        url_relative=lambda url: url if url in produced_urls else None,
        set_tag_attribute_values={"a": {"target": "_blank"}},
        link_rel="noopener noreferrer",
        strip_comments=True,
    )
    cleaned = cleaner.clean(html)
    return SanitizedHtml(
        html=cleaned, blocked_remote_images=counts["blocked"], inline_images=counts["inline"]
    )


def email_html_document(body_html: str) -> str:
    """The complete document of the frame around an already sanitized body."""
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        '<meta name="referrer" content="no-referrer">'
        f"<style>{DOCUMENT_CSS}</style></head><body>{body_html}</body></html>"
    )


def email_body_csp(*, allow_remote_images: bool) -> str:
    """Content-Security-Policy of the frame document: nothing runs, nothing is fetched but the
    email's own inline images ('self'), and remote images only after "show images"."""
    images = "'self' https: http:" if allow_remote_images else "'self'"
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'none'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
            f"img-src {images}",
            # The inline style attributes kept by clean_style() and the document's own <style>.
            "style-src 'unsafe-inline'",
            "frame-ancestors 'self'",
            # Also sandboxed when opened on its own, outside the iframe.
            "sandbox allow-popups allow-popups-to-escape-sandbox",
        ]
    )
