"""mailboxes/sanitize.py: pure, no database. Every hostile construct with its exact output."""

from __future__ import annotations

import pytest

from mailhub.web.sanitize import (
    SanitizedHtml,
    clean_style,
    email_body_csp,
    email_html_document,
    normalize_content_id,
    sanitize_email_html,
)

INLINE = {"logo@example.com": "/emails/1/inline/7/?t=token"}


def clean(html: str, *, images: bool = False, inline: dict | None = None) -> str:
    return sanitize_email_html(
        html, inline_image_urls=INLINE if inline is None else inline, allow_remote_images=images
    ).html


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("<p>Hi</p><script>alert(1)</script>", "<p>Hi</p>"),
        ("<SCRIPT SRC=//evil.example/x.js></SCRIPT>ok", "ok"),
        ('<img src="cid:logo@example.com" onerror="alert(1)">', '<img src="/emails/1/inline/7/?t=token">'),
        ('<p onclick="alert(1)" onmouseover="x()">text</p>', "<p>text</p>"),
        ('<body onload="alert(1)">x</body>', "x"),
        ('<a href="javascript:alert(1)">x</a>', '<a target="_blank" rel="noopener noreferrer">x</a>'),
        ('<a href=" JaVaScRiPt:alert(1)">x</a>', '<a target="_blank" rel="noopener noreferrer">x</a>'),
        ('<a href="jav&#x09;ascript:alert(1)">x</a>', '<a target="_blank" rel="noopener noreferrer">x</a>'),
        ('<a href="vbscript:msgbox(1)">x</a>', '<a target="_blank" rel="noopener noreferrer">x</a>'),
        (
            '<a href="data:text/html,<script>alert(1)</script>">x</a>',
            '<a target="_blank" rel="noopener noreferrer">x</a>',
        ),
        (
            '<a href="https://example.com/a?b=1&amp;c=2">x</a>',
            '<a href="https://example.com/a?b=1&amp;c=2" target="_blank" rel="noopener noreferrer">x</a>',
        ),
        (
            '<a href="//example.com/x">x</a>',
            '<a href="https://example.com/x" target="_blank" rel="noopener noreferrer">x</a>',
        ),
        (
            '<a href="mailto:ann@example.com">x</a>',
            '<a href="mailto:ann@example.com" target="_blank" rel="noopener noreferrer">x</a>',
        ),
        (
            '<a href="/cases/1/update/">x</a>',
            '<a rel="noopener noreferrer" target="_blank">x</a>',
        ),  # relative
        ('<a href="cid:logo@example.com">x</a>', '<a rel="noopener noreferrer" target="_blank">x</a>'),
        ('<div style="width: expression(alert(1))">x</div>', "<div>x</div>"),
        (
            '<div style="color: red; width: expression(alert(1)); margin: 0">x</div>',
            '<div style="color: red; margin: 0">x</div>',
        ),
        ('<div style="background-image: url(http://t.example/p.gif)">x</div>', "<div>x</div>"),
        ('<div style="background: url(http://t.example/p.gif)">x</div>', "<div>x</div>"),
        ('<div style="color: re\\64">x</div>', "<div>x</div>"),  # CSS escape
        ('<div style="color: red/**/;behavior: url(x.htc)">x</div>', "<div>x</div>"),
        ('<div style="-moz-binding: url(x.xml#xss)">x</div>', "<div>x</div>"),
        ('<div style="position: fixed; top: 0">x</div>', "<div>x</div>"),
        ('<td style="background-color: rgb(250, 250, 250); padding: 4px 8px">x</td>', "x"),
        (
            '<table><tr><td style="background-color: rgb(250, 250, 250); padding: 4px">x</td></tr></table>',
            '<table><tbody><tr><td style="background-color: rgb(250, 250, 250); padding: 4px">x</td>'
            "</tr></tbody></table>",
        ),
        ("<style>body { background: url(http://t.example/p.gif) }</style><p>x</p>", "<p>x</p>"),
        ('<link rel="stylesheet" href="http://t.example/s.css"><p>x</p>', "<p>x</p>"),
        (
            '<form action="https://phish.example/" method="post"><input name="password">Password</form>',
            "Password",
        ),
        ("<button formaction=x>Go</button>", "Go"),
        ('<iframe src="https://evil.example/"></iframe>after', "after"),
        ('<object data="https://evil.example/x.swf">fallback</object>after', "after"),
        ('<embed src="https://evil.example/x.swf">after', "after"),
        ("<svg><script>alert(1)</script><circle/></svg>after", "after"),
        ("<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>", ""),
        ('<meta http-equiv="refresh" content="0;url=https://evil.example/">x', "x"),
        ('<base href="https://evil.example/">x', "x"),
        ("<!-- <script>alert(1)</script> -->x", "x"),
        ("<noscript><img src=x onerror=alert(1)></noscript>x", "x"),
        ("<textarea><script>alert(1)</script></textarea>x", "x"),
        ("<title>Newsletter</title><p>x</p>", "<p>x</p>"),
        ('<img src="x" srcset="http://t.example/p.gif 2x">', "<img>"),
        (
            '<table background="http://t.example/bg.gif"><tr><td>x</td></tr></table>',
            "<table><tbody><tr><td>x</td></tr></tbody></table>",
        ),
    ],
)
def test_hostile_html(html, expected):
    assert clean(html) == expected


@pytest.mark.parametrize(
    ("source", "blocked"),
    [
        ("http://t.example/p.gif", 1),
        ("https://t.example/p.gif", 1),
        ("//t.example/p.gif", 1),
        ("HTTP://T.EXAMPLE/P.GIF", 1),
        ("data:image/png;base64,iVBORw0KGgo=", 0),  # never loaded, not a remote image either
        ("/emails/1/attachments/2/", 0),  # relative: would hit mailhub itself
        ("cid:unknown@example.com", 0),  # no such inline attachment
        ("file:///etc/passwd", 0),
    ],
)
def test_images_that_load_nothing(source, blocked):
    result = sanitize_email_html(
        f'<img src="{source}" alt="a">', inline_image_urls=INLINE, allow_remote_images=False
    )
    assert result == SanitizedHtml(html='<img alt="a">', blocked_remote_images=blocked, inline_images=0)


def test_remote_images_once_allowed():
    result = sanitize_email_html(
        '<img src="http://t.example/a.gif"><img src="https://t.example/b.gif"><img src="//t.example/c.gif">',
        inline_image_urls={},
        allow_remote_images=True,
    )
    assert result == SanitizedHtml(
        html='<img src="http://t.example/a.gif"><img src="https://t.example/b.gif"><img src="https://t.example/c.gif">',
        blocked_remote_images=0,
        inline_images=0,
    )


@pytest.mark.parametrize(
    "reference",
    [
        "cid:logo@example.com",
        "CID:logo@example.com",
        "cid:LOGO@Example.COM",
        "cid:logo%40example.com",
        " cid:logo@example.com ",
    ],
)
def test_cid_images_point_at_the_attachment_url(reference):
    result = sanitize_email_html(
        f'<img src="{reference}">', inline_image_urls=INLINE, allow_remote_images=False
    )
    assert result == SanitizedHtml(
        html='<img src="/emails/1/inline/7/?t=token">', blocked_remote_images=0, inline_images=1
    )


def test_content_ids_are_matched_as_stored():
    assert normalize_content_id("<Part1.ABC@Example.com>") == "part1.abc@example.com"
    assert normalize_content_id("part1.abc%40example.com") == "part1.abc@example.com"
    inline = {"<Part1.ABC@Example.com>": "/x/?t=1"}
    assert clean('<img src="cid:part1.abc@example.com">', inline=inline) == '<img src="/x/?t=1">'


def test_the_attachment_url_cannot_be_forged_by_the_sender():
    # The same URL written by the sender (not produced from a cid:) is relative: dropped.
    assert clean('<img src="/emails/1/inline/7/?t=token">') == "<img>"


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("color: red", "color: red"),
        ("COLOR : Red ; font-weight:bold", "color: Red; font-weight: bold"),
        ("font-family: 'Segoe UI', Arial, sans-serif", "font-family: 'Segoe UI', Arial, sans-serif"),
        ("color: #333 !important", "color: #333 !important"),
        ("color: hsla(10, 20%, 30%, .5)", "color: hsla(10, 20%, 30%, .5)"),
        ("color: rgb(1,2,3) url(x)", None),
        ("width: calc(100% - 10px)", None),
        ("color: var(--x)", None),
        ("content: 'x'", None),
        ("font-family: x; src: url(http://t.example/f.woff)", "font-family: x"),
        ("width: 10px; height", "width: 10px"),
        ("", None),
    ],
)
def test_clean_style(style, expected):
    assert clean_style(style) == expected


def test_document_and_csp():
    document = email_html_document("<p>x</p>")
    assert document.startswith(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><meta name="referrer" content="no-referrer"><style>'
    )
    assert document.endswith("</style></head><body><p>x</p></body></html>")
    assert "<script" not in document
    strict = email_body_csp(allow_remote_images=False)
    assert strict == (
        "default-src 'none'; script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'; "
        "img-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'self'; "
        "sandbox allow-popups allow-popups-to-escape-sandbox"
    )
    assert email_body_csp(allow_remote_images=True) == strict.replace(
        "img-src 'self';", "img-src 'self' https: http:;"
    )
