"""mailboxes.parsing: the shared corpus against an independent parser, plus hostile hand-made mail.

No database: plain pytest functions (run with ``-p no:django`` while the project is half-built).
"""

from __future__ import annotations

import base64
import json
import mimetypes
import os
import random
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from mailboxes.mime.html_text import html_to_text
from mailboxes.parsing import ParsedAddress, ParsedAttachment, ParsedEmail, parse_email

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
CORPUS_FILES = sorted(CORPUS.glob("*/*.eml"))
_MIME = mimetypes.MimeTypes()


def require_corpus() -> None:
    if not CORPUS_FILES:
        message = f"the shared email corpus is missing at {CORPUS}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


# ---------------------------------------------------------------------------------------------
# Corpus: compare with the expected results of stalwartlabs/mail-parser (see corpus README.md)
# ---------------------------------------------------------------------------------------------

# Where the two parsers legitimately differ: file -> {field: (the exact value WE produce, why)}.
# The test asserts our value exactly, and that mail-parser's value still differs (no stale entry).
# Two differences are handled as comparison rules instead, because they touch many files: a
# U+FFFD in mail-parser's text matches any one character of ours (see same()), and an attachment
# name is compared without its directory part (we strip paths on purpose).
UUENCODE = (
    "x-uuencode attachment: we undo the uuencoding (the stdlib does), mail-parser keeps the encoded text"
)
OUTER_ENDS_INNER = (
    "an enclosing boundary ends the unterminated inner multipart (RFC 2046 §5.1.2: it cannot occur"
    " inside a part); mail-parser keeps scanning for the inner boundary and turns the rest into an attachment"
)
UNTERMINATED = (
    "the last part runs to the end of the file without a close-delimiter: we show it as body text"
    " like the stdlib and mail readers; mail-parser flags it as an encoding problem and makes it"
    " an attachment"
)
TWO_CONTENT_TYPES = (
    "part with two Content-Type headers (multipart/alternative, then text/plain): the stdlib uses the"
    " first, so we show the HTML alternative; mail-parser uses the last and shows the raw MIME as text"
)
KNOWN_DIFFERENCES: dict[str, dict[str, tuple[object, str]]] = {
    "legacy/017.eml": {
        "attachment 1": (("image/png", "greenball.png", ("size", 1298)), UUENCODE),
        "attachment 2": (("image/png", "blueball.png", ("size", 1325)), UUENCODE),
    },
    "legacy/026.eml": {"attachment 1": (("text/plain", "HasenundFrösche.txt", ("size", 747)), UUENCODE)},
    "legacy/048.eml": {
        "attachment 1": (("image/png", "redball.png", ("size", 1453)), UUENCODE),
        "attachment 2": (("image/png", "greenball.png", ("size", 1298)), UUENCODE),
        "attachment 3": (("image/png", "blueball.png", ("size", 1325)), UUENCODE),
    },
    "malformed/001.eml": {
        "text_body": ("--a", OUTER_ENDS_INNER + "; so '--a' after '--ab' is plain text"),
        "attachment count": (0, OUTER_ENDS_INNER),
        "attachment 1": (None, OUTER_ENDS_INNER),
    },
    "malformed/002.eml": {
        "text_body": ("body", "multipart/mixed whose boundary never occurs: we show the body as text"),
        "attachment count": (0, "mail-parser lists the boundary-less multipart itself as an attachment"),
        "attachment 1": (None, "mail-parser lists the boundary-less multipart itself as an attachment"),
    },
    "malformed/003.eml": {
        "text_body": ("body", UNTERMINATED),
        "attachment count": (0, UNTERMINATED),
        "attachment 1": (None, UNTERMINATED),
    },
    "malformed/004.eml": {
        "text_body": (
            '--ab Content-Type: multipart/mixed; boundary="a" --ac Content-Type: text/plain body',
            "no line is a delimiter for boundary 'a' (RFC 2046 §5.1.1 allows only whitespace after it),"
            " so the whole body is text; mail-parser accepts '--ab' and '--ac' as delimiters",
        ),
        "attachment count": (0, "see text_body: mail-parser finds a truncated text part there"),
        "attachment 1": (None, "see text_body: mail-parser finds a truncated text part there"),
    },
    "malformed/005.eml": {
        "text_body": (
            "",
            "boundary 'a--' is a prefix of the inner 'a----' (RFC 2046 §5.1.1 forbids it): the stdlib"
            " reads '--a----' as the outer close-delimiter, mail-parser as the inner delimiter",
        ),
    },
    "malformed/006.eml": {
        "text_body": ("body", UNTERMINATED),
        "attachment count": (0, UNTERMINATED),
        "attachment 1": (None, UNTERMINATED),
    },
    "malformed/007.eml": {
        "attachment count": (
            0,
            "mail-parser reports a phantom empty part after '--ab' (no blank line) as attachment",
        ),
        "attachment 1": (
            None,
            "mail-parser reports a phantom empty part after '--ab' (no blank line) as attachment",
        ),
    },
    "malformed/008.eml": {
        "text_body": (
            "body body2",
            UNTERMINATED + "; the HTML part follows the text part in multipart/mixed",
        ),
        "html_body": (
            "<pre>body</pre> body2",
            UNTERMINATED + "; RFC 8621 §4.1.4: text then HTML inline in mixed go to both views",
        ),
        "attachment count": (0, UNTERMINATED),
        "attachment 1": (None, UNTERMINATED),
    },
    "malformed/009.eml": {
        "text_body": ("1 22 333", OUTER_ENDS_INNER),
        "attachment count": (0, OUTER_ENDS_INNER),
        "attachment 1": (None, OUTER_ENDS_INNER),
    },
    "malformed/011.eml": {
        "text_body": ("1 22 333", OUTER_ENDS_INNER),
        "attachment count": (0, OUTER_ENDS_INNER),
        "attachment 1": (None, OUTER_ENDS_INNER),
    },
    "malformed/012.eml": {
        "attachment count": (3, OUTER_ENDS_INNER + "; mail-parser loses the third message"),
        "attachment 3": (("message/rfc822", "attachment-3.eml", ("subject", "")), OUTER_ENDS_INNER),
    },
    "malformed/016.eml": {
        "text_body": (
            "1 22 --"
            + "1234567890" * 8
            + "1 Content-Type: text/plain 333 --"
            + "1234567890" * 8
            + " Content-Type: text/plain 4444",
            OUTER_ENDS_INNER + " (the 80-82 character boundaries are prefixes of each other)",
        ),
        "attachment count": (0, OUTER_ENDS_INNER),
        "attachment 1": (None, OUTER_ENDS_INNER),
    },
    "malformed/017.eml": {
        "attachment 1": (
            ("image/png", "image001.png", ("size", 12)),
            "'Content-Disposition: ;' then filename= on the next line: we still read the filename",
        ),
    },
    "malformed/019.eml": {
        "text_body": (
            "JPlain text body of the multipart fixture. Ct fixture.</Mmlti Sender <multi@example.test> To:"
            " rimap-test <rimap-test@example.test> Subject: Sprint 3 multipart fixture Message-ID:"
            " <multi-001@example.test> Date: Tue, 7 Apr 2026 10:00:01 +0000 MIME-Version: 1.0 Content-Type:"
            ' multipart/alternative; boundary="boundary42" --Boundary42 Content-Type: text/plain;'
            " charset=us-ascii JPlain text body of the multipart fixture. Ct fixture.</Mmlti Sender"
            " <multi@example.test> To: rimap-test <rimap-test@example.test> Subject: Sprint 3 multipart"
            " fixture Message-ID: <multi-001@example.test> Date: Tue, 7 Apr 2026 10:00:01 +0000"
            ' MIME-Version: 1.0 Content-Type: multipart/alternative; boundary="boundary42" --Boundary42'
            " Content-Type: text/plain; charset=us-ascii JPlain text body of the multipart fixture."
            " Content-Tp>",
            "a message pasted into itself: the line after the part header is not a header, so the stdlib"
            " starts the body there (RFC 5322 §2.2) and we show it; mail-parser takes it as a header",
        ),
    },
    "malformed/020.eml": {
        "text_body": ("HTML Body", TWO_CONTENT_TYPES),
        "html_body": (
            '<html> <head> <meta content="text/html; charset=UTF-8" http-equiv="Content-Type"> </head>'
            ' <body bgcolor="#FFFFFF" text="#000000"> HTML Body<br> <img src="cid:part1" alt=""><br>'
            " </body> </html>",
            TWO_CONTENT_TYPES,
        ),
    },
    "malformed/021.eml": {
        "text_body": ("áóúäöüß", TWO_CONTENT_TYPES),
        "html_body": (
            "<!-- This also needs to work when there is no html tag --> <head> <meta"
            ' content="text/html; charset=UTF-8" http-equiv="Content-Type"> </head> <body'
            ' bgcolor="#FFFFFF" text="#000000"> áóúäöüß<br> <img src="cid:part1" alt=""><br> </body>',
            TWO_CONTENT_TYPES,
        ),
    },
    "rfc/000.eml": {
        "attachment 1": (
            ("audio/basic", "attachment-1.au", ("size", 45)),
            "RFC 2046 example whose 'base64' body is placeholder prose: we decode the base64 letters in it"
            " (as the stdlib does), mail-parser keeps the text",
        ),
        "attachment 2": (("image/jpeg", "attachment-2.jpg", ("size", 22)), "as attachment 1"),
    },
    "thirdparty/002.eml": {
        "text_body": (
            "päivää yötä vaan. \ufffdªÛj",
            "base64 with text after the padding and a part of invalid base64 ('?garbage'): we stop at the"
            " padding and decode what is decodable as the third text part; mail-parser decodes the text"
            " after the padding and lists the invalid part, undecoded, as an attachment",
        ),
        "attachment count": (0, "see text_body"),
        "attachment 1": (None, "see text_body"),
    },
    "thirdparty/005.eml": {
        "text_body": (
            "Test message Test message Test message 『世界人権宣言』 invalid--1--",
            "'invalid--1--': a delimiter must start a line (RFC 2046 §5.1.1), so this is text",
        ),
    },
    "thirdparty/007.eml": {
        "from": (
            ("Moderator-Address", ""),
            "'<moderator>' has no domain, not an RFC 5322 addr-spec: no address (we never reply to it)",
        ),
    },
    "thirdparty/015.eml": {
        "attachment count": (
            3,
            "three attached messages whose own multipart bodies are cut off: the enclosing boundary"
            " ends each (RFC 2046 §5.1.2), mail-parser runs the first into the others and finds one",
        ),
        "attachment 1": (
            (
                "message/rfc822",
                "training-mail.txt",
                ("subject", "Exciting updates for our training partnership"),
            ),
            "see attachment count",
        ),
        "attachment 2": (
            ("message/rfc822", "office-reply.txt", ("subject", "RE: (#5290765) Proxmox Shop E-Mails")),
            "see attachment count",
        ),
        "attachment 3": (
            ("message/rfc822", "shop-mail.txt", ("subject", "")),
            "see attachment count; its header block is broken by an empty line before Subject",
        ),
    },
}


def norm(text: str) -> str:
    # Whitespace is compared collapsed, and NULs are dropped: we strip them on purpose.
    return " ".join(text.replace("\x00", "").split())


def same(expected: object, observed: object) -> bool:
    """Equality, except that a U+FFFD in mail-parser's text matches any one character of ours.

    mail-parser decodes undeclared/mislabelled 8-bit text as UTF-8 with U+FFFD; we fall back to
    cp1252 (Outlook-era mail is full of it), so "Fr\ufffdsche" is "Frösche" for us. Everything
    around the replaced character is still compared exactly.
    """
    if isinstance(expected, str) and isinstance(observed, str) and "\ufffd" in expected:
        pattern = ".".join(re.escape(chunk) for chunk in expected.split("\ufffd"))
        return re.fullmatch(pattern, observed, re.DOTALL) is not None
    if isinstance(expected, tuple | list) and isinstance(observed, tuple | list):
        return len(expected) == len(observed) and all(map(same, expected, observed))
    return expected == observed


def _header(part: dict, name: str) -> object:
    return next((h["value"] for h in part["headers"] if h["name"] == name), None)


def _content_type(part: dict, kind: str) -> tuple[str, dict[str, str]]:
    value = _header(part, "content_type")
    if not isinstance(value, dict) or "ContentType" not in value:
        # RFC 2045 §5.2 default; RFC 2046 §5.1.5 default inside multipart/digest
        return ("message/rfc822" if kind == "Message" else "text/plain"), {}
    ct = value["ContentType"]
    attrs = {a["name"].lower(): a["value"] for a in ct.get("attributes") or []}
    return f"{ct['c_type']}/{ct['c_subtype']}".lower(), attrs


def _filename(part: dict, kind: str) -> str | None:
    disposition = _header(part, "content_disposition")
    if isinstance(disposition, dict) and "ContentType" in disposition:
        name = {a["name"].lower(): a["value"] for a in disposition["ContentType"].get("attributes") or []}
        if name.get("filename"):
            return name["filename"]
    return _content_type(part, kind)[1].get("name")


def _kind(part: dict) -> str:
    return next(iter(part["body"]))


def _value(part: dict) -> object:
    return part["body"][_kind(part)]


def _first_address(value: object) -> tuple[str, str]:
    if not isinstance(value, dict) or "Address" not in value:
        return ("", "")
    address = value["Address"]
    entries = address.get("List") or [a for g in address.get("Group", []) for a in g.get("addresses", [])]
    if not entries:
        return ("", "")
    return (entries[0].get("name") or "", entries[0].get("address") or "")


def expected_fields(doc: dict) -> dict[str, object]:
    parts = doc["parts"]
    root = parts[0]
    subject = _header(root, "subject")
    fields: dict[str, object] = {
        "subject": norm(subject["Text"]) if isinstance(subject, dict) else "",
        "from": _first_address(_header(root, "from")),
    }
    # A reader's plain body: mail-parser lists images shown between text parts too (skip them);
    # for an HTML part in the plain list it would convert HTML to text in its own way, so we
    # compare against our html_to_text of *its* decoded HTML (that still checks part choice and
    # charset decoding, not the converter).
    text_parts = [parts[i] for i in doc["text_body"] if _kind(parts[i]) in ("Text", "Html")]
    fields["text_body"] = norm(
        "\n".join(_value(p) if _kind(p) == "Text" else html_to_text(_value(p)) for p in text_parts)
    )
    # mail-parser also offers an HTML view of plain-text-only mail (it converts the text), so
    # only its real HTML parts count: none -> our html_body is ""; only HTML -> the same HTML;
    # HTML mixed with plain parts (converted differently by each parser) -> its HTML parts must
    # appear in ours, in order.
    kinds = [_kind(parts[i]) for i in doc["html_body"]]
    html = [norm(_value(parts[i])) for i in doc["html_body"] if _kind(parts[i]) == "Html"]
    fields["html_body"] = ("contains", html) if "Text" in kinds and html else " ".join(html)
    fields["attachment count"] = len(doc["attachments"])
    for number, index in enumerate(doc["attachments"], 1):
        fields[f"attachment {number}"] = _expected_attachment(parts[index], number)
    return fields


def _expected_attachment(part: dict, number: int) -> tuple[str, str, tuple]:
    kind = _kind(part)
    ctype, attrs = _content_type(part, kind)
    name = _filename(part, kind)
    if name:  # we keep only the last path component (no "../" tricks): compare that
        name = name.replace("\\", "/").rsplit("/", 1)[-1]
    content: tuple
    if kind == "Message":  # mail-parser parsed it; we keep its bytes: compare the subject
        nested = _header(_value(part)["parts"][0], "subject")
        nested_subject = norm(nested["Text"]) if isinstance(nested, dict) else ""
        name = name or (f"{nested_subject}.eml" if nested_subject else f"attachment-{number}.eml")
        content = ("subject", nested_subject)
    elif kind == "Text":  # mail-parser decoded it to text: back to bytes in its declared charset
        content = ("size", len(_value(part).encode(attrs.get("charset") or "ascii", "replace")))
    else:
        content = ("size", len(_value(part)))
    return (ctype, name or f"attachment-{number}{_MIME.guess_extension(ctype) or '.bin'}", content)


def _observed_attachment(attachment: ParsedAttachment, like: tuple | None) -> tuple[str, str, tuple]:
    kind = like[2][0] if like else ("subject" if attachment.content_type == "message/rfc822" else "size")
    content = (
        ("subject", parse_email(attachment.payload).subject)
        if kind == "subject"
        else ("size", attachment.size)
    )
    return (attachment.content_type, attachment.filename, content)


def observed_fields(parsed: ParsedEmail, expected: dict[str, object]) -> dict[str, object]:
    fields: dict[str, object] = {
        "subject": parsed.subject,
        "from": (parsed.from_name, parsed.from_address),
        "text_body": norm(parsed.text_body),
    }
    html = norm(parsed.html_body)
    wanted = expected["html_body"]
    if isinstance(wanted, tuple):
        fields["html_body"] = wanted if _in_order(html, wanted[1]) else ("contains", [html])
    else:
        fields["html_body"] = html
    fields["attachment count"] = len(parsed.attachments)
    for number, attachment in enumerate(parsed.attachments, 1):
        like = expected.get(f"attachment {number}")
        fields[f"attachment {number}"] = _observed_attachment(
            attachment, like if isinstance(like, tuple) else None
        )
    return fields


def _in_order(haystack: str, needles: list[str]) -> bool:
    position = 0
    for needle in needles:
        found = haystack.find(needle, position)
        if found < 0:
            return False
        position = found + len(needle)
    return True


@pytest.mark.parametrize("path", CORPUS_FILES or [None], ids=lambda p: p and f"{p.parent.name}/{p.name}")
def test_corpus_message_matches_independent_parser(path: Path | None) -> None:
    require_corpus()
    assert path is not None
    name = f"{path.parent.name}/{path.name}"
    raw = path.read_bytes()
    as_stored = parse_email(raw)  # whatever its line ends
    assert [p for p in as_stored.problems if p.startswith(("parser failed", "MIME parser failed"))] == []
    lf = raw.replace(b"\r\n", b"\n")
    known = KNOWN_DIFFERENCES.get(name, {})
    for variant, data, json_name in (
        ("LF", lf, f"{path.stem}.json"),
        ("CRLF", lf.replace(b"\n", b"\r\n"), f"{path.stem}.crlf.json"),
    ):
        expected = expected_fields(json.loads((path.parent / json_name).read_text(encoding="utf-8")))
        observed = observed_fields(parse_email(data), expected)
        for field in sorted(set(expected) | set(observed)):
            if field in known:
                ours, reason = known[field]
                assert observed.get(field) == ours, f"{name} ({variant}) {field}: {reason}"
                assert not same(expected.get(field), ours), f"{name} ({variant}) {field}: stale difference"
            else:
                assert same(expected.get(field), observed.get(field)), f"{name} ({variant}) {field}"


def test_corpus_is_complete() -> None:
    require_corpus()
    assert len(CORPUS_FILES) == 107
    assert set(KNOWN_DIFFERENCES) <= {f"{p.parent.name}/{p.name}" for p in CORPUS_FILES}


# ---------------------------------------------------------------------------------------------
# Hand-made hostile mail
# ---------------------------------------------------------------------------------------------

HEAD = (
    b"From: Alice Example <alice@example.com>\n"
    b"To: bob@example.org\n"
    b"Date: Mon, 3 Mar 2025 10:00:00 +0100\n"
    b"Message-ID: <m1@example.com>\n"
)


def mail(headers: bytes, body: bytes = b"x\n") -> ParsedEmail:
    return parse_email(HEAD + headers + b"\n" + body)


def storable(parsed: ParsedEmail) -> list[str]:
    """Every string of the result that a database would refuse (NUL, lone surrogates)."""
    strings = [parsed.message_id, parsed.in_reply_to, parsed.subject, parsed.from_name, parsed.from_address]
    strings += [parsed.text_body, parsed.html_body, *parsed.references, *parsed.problems]
    strings += [s for pair in parsed.headers for s in pair]
    strings += [s for a in parsed.to + parsed.cc + parsed.reply_to for s in (a.name, a.address)]
    strings += [s for a in parsed.attachments for s in (a.filename, a.content_type, a.content_id)]
    bad = []
    for text in strings:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            bad.append(text)
        if "\x00" in text:
            bad.append(text)
    return bad


def test_well_formed_message_fields() -> None:
    parsed = mail(
        b"Subject: Hello\n  folded   world\n"
        b'Cc: =?utf-8?q?Smith=2C_John?= <j@x.org>, "Doe, Jane" <jane@x.org>\n'
        b"Reply-To: team: a@x.org, b@x.org;\nIn-Reply-To: <p1@h> <p2@h>\n"
        b"References: <r1@h> junk <> <r2@h>\n\t< r3 @h >\n"
    )
    assert parsed.subject == "Hello folded world"
    assert (parsed.from_name, parsed.from_address) == ("Alice Example", "alice@example.com")
    assert parsed.to == [ParsedAddress(name="", address="bob@example.org")]
    assert parsed.cc == [ParsedAddress("Smith, John", "j@x.org"), ParsedAddress("Doe, Jane", "jane@x.org")]
    assert parsed.reply_to == [ParsedAddress("", "a@x.org"), ParsedAddress("", "b@x.org")]
    assert parsed.date == datetime(2025, 3, 3, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    assert (parsed.message_id, parsed.in_reply_to) == ("<m1@example.com>", "<p1@h>")
    assert parsed.references == ["<r1@h>", "<r2@h>", "<r3@h>"]
    assert parsed.text_body == "x\n"
    assert parsed.html_body == ""
    assert parsed.attachments == []
    assert parsed.problems == []
    assert parsed.header("SUBJECT") == "Hello  folded   world"  # unfolded (RFC 5322 §2.2.3) as written
    assert parsed.header("x-missing") == ""
    assert [name for name, _ in parsed.headers] == [
        "From", "To", "Date", "Message-ID", "Subject", "Cc", "Reply-To", "In-Reply-To", "References",
    ]  # fmt: skip


def test_unknown_charset_falls_back_to_utf8_with_a_problem() -> None:
    parsed = mail(b"Subject: x\nContent-Type: text/plain; charset=x-foo\n", b"caf\xc3\xa9\n")
    assert parsed.text_body == "café\n"
    assert parsed.problems == ["unknown charset 'x-foo' in part 1, decoded as utf-8"]


def test_unknown_charset_and_invalid_utf8_is_decoded_with_visible_replacement() -> None:
    parsed = mail(
        b"Subject: x\nContent-Type: text/plain; charset=x-foo\n", b"\xe2\x82\xac 5, \xe2\x82\xac 6, \x81\n"
    )
    assert parsed.text_body == "€ 5, € 6, \ufffd\n"
    assert parsed.problems == ["unknown charset 'x-foo' in part 1, decoded as utf-8 with replacement"]


def test_cp1252_bytes_declared_utf8_fall_back_to_cp1252() -> None:
    body = b"caf\xe9 \x80 10 \x93quoted\x94\n"
    parsed = mail(
        b"Subject: x\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n", body
    )
    assert parsed.text_body == "café € 10 \u201cquoted\u201d\n"
    assert parsed.problems == ["part 1 is not valid utf-8, decoded as cp1252"]


def test_cjk_charset_with_a_broken_byte_keeps_the_charset() -> None:
    body = "こんにちは".encode("shift_jis") + b"\x82\n"  # a lead byte without its trail byte
    parsed = mail(b"Subject: x\nContent-Type: text/plain; charset=shift_jis\n", body)
    assert parsed.text_body == "こんにちは\ufffd\n"
    assert parsed.problems == ["part 1 is not valid shift_jis, decoded as cp932 with replacement"]


def test_raw_8bit_subject_header() -> None:
    assert mail(b"Subject: Die Fr\xf6sche\n").subject == "Die Frösche"
    assert mail(b"Subject: Die Fr\xf6sche\n").problems == [
        "raw 8-bit bytes in Subject header, decoded as cp1252"
    ]
    # RFC 6532 allows raw utf-8 in headers: no problem then
    assert mail(b"Subject: Die Fr\xc3\xb6sche\n").subject == "Die Frösche"
    assert mail(b"Subject: Die Fr\xc3\xb6sche\n").problems == []


def test_rfc2047_subject_split_across_encoded_words() -> None:
    # "ü" is split between two base64 words; whitespace between encoded-words is dropped (§6.2)
    parsed = mail(b"Subject: Re: =?UTF-8?B?SsM=?=\n =?UTF-8?B?vHJnZW4=?= und =?iso-8859-1?q?Fr=F6sche?=_x\n")
    assert parsed.subject == "Re: Jürgen und Frösche_x"
    assert parsed.problems == []
    assert mail(b"Subject: =?utf-8?q?=E2=82?= =?utf-8?q?=AC_5?=\n").subject == "€ 5"


def test_encoded_word_cannot_inject_header_lines() -> None:
    parsed = mail(b"Subject: =?utf-8?q?a=0D=0ABcc:_x@y?=\n")
    assert parsed.subject == "a Bcc: x@y"
    assert parsed.header("Subject") == "a Bcc: x@y"
    assert "Bcc" not in [name for name, _ in parsed.headers]
    named = mail(b"Cc: =?utf-8?q?Eve=0D=0ABcc:_x@y?= <eve@example.com>\n")
    assert named.cc == [ParsedAddress("Eve Bcc: x@y", "eve@example.com")]


def test_rfc2231_and_rfc2047_filenames_are_decoded_and_sanitized() -> None:
    parts = [
        b"Content-Type: application/pdf\nContent-Disposition: attachment; filename*=UTF-8''%E2%82%AC.pdf",
        b"Content-Type: application/octet-stream\n"
        b"Content-Disposition: attachment; filename*0*=utf-8''Gr%C3%BC; filename*1*=%C3%9Fe.txt",
        b'Content-Type: application/pdf; name="=?utf-8?q?R=C3=A9sum=C3=A9.pdf?="',
        b'Content-Type: text/plain\nContent-Disposition: attachment; filename="../../etc/passwd"',
        b'Content-Type: text/plain\nContent-Disposition: attachment; filename="C:\\\\Temp\\\\a.txt"',
        b"Content-Type: application/x-msdownload\nContent-Disposition: attachment;"
        b" filename*=utf-8''invoice%E2%80%AEfdp.exe",
        b"Content-Type: application/pdf\nContent-Disposition: attachment; filename=" + b"a" * 300 + b".pdf",
        b'Content-Type: image/png\nContent-Disposition: attachment; filename=".."',
    ]
    body = b"".join(b"--b\n" + headers + b"\n\nx\n" for headers in parts) + b"--b--\n"
    parsed = mail(b"Subject: files\nContent-Type: multipart/mixed; boundary=b\n", body)
    assert [a.filename for a in parsed.attachments] == [
        "€.pdf",
        "Grüße.txt",
        "Résumé.pdf",
        "passwd",
        "a.txt",
        "invoicefdp.exe",
        "a" * 251 + ".pdf",
        "attachment-8.png",
    ]
    assert [a.content_type for a in parsed.attachments][:3] == [
        "application/pdf",
        "application/octet-stream",
        "application/pdf",
    ]
    assert [a.payload for a in parsed.attachments] == [b"x"] * 8
    assert parsed.text_body == ""
    assert parsed.problems == []


def test_missing_from_date_and_message_id() -> None:
    parsed = parse_email(b"Subject: hi\n\nbody")
    assert (parsed.from_name, parsed.from_address, parsed.date, parsed.message_id) == ("", "", None, "")
    assert (parsed.subject, parsed.text_body) == ("hi", "body")
    assert parsed.problems == ["missing From header", "missing Date header", "missing Message-ID header"]


def test_garbage_date_and_message_id() -> None:
    parsed = parse_email(
        HEAD.replace(b"Mon, 3 Mar 2025 10:00:00 +0100", b"yesterday-ish").replace(b"<m1@example.com>", b"<>")
        + b"\nx"
    )
    assert parsed.date is None
    assert parsed.message_id == ""
    assert parsed.problems == [
        "unparseable Message-ID header '<>'",
        "unparseable Date header 'yesterday-ish'",
    ]


def test_dates_without_zone_are_utc_and_zones_are_kept() -> None:
    no_zone = parse_email(HEAD.replace(b"Mon, 3 Mar 2025 10:00:00 +0100", b"3 Mar 2025 10:00:00") + b"\nx")
    assert no_zone.date == datetime(2025, 3, 3, 10, 0, tzinfo=UTC)
    minus_zero = parse_email(HEAD.replace(b"+0100", b"-0000") + b"\nx")
    assert minus_zero.date == datetime(2025, 3, 3, 10, 0, tzinfo=UTC)
    assert minus_zero.date.tzinfo is UTC


def test_message_id_is_normalised() -> None:
    assert (
        parse_email(HEAD.replace(b"<m1@example.com>", b"  < abc @ host >") + b"\nx").message_id
        == "<abc@host>"
    )
    assert parse_email(HEAD.replace(b"<m1@example.com>", b"bare@host") + b"\nx").message_id == "<bare@host>"


def test_addresses_without_a_domain_are_not_addresses() -> None:
    parsed = parse_email(b"From: Moderator <moderator>\nTo: undisclosed-recipients:;\n\nx")
    assert (parsed.from_name, parsed.from_address) == ("Moderator", "")
    assert parsed.to == []
    assert "From header: unusable address 'moderator'" in parsed.problems


def test_html_only_mail_gets_text_without_scripts_or_styles() -> None:
    html = (
        b"<html><head><title>Newsletter</title><style>p {color: red}</style>"
        b"<script>alert('script body')</script></head><body><p>Hello&nbsp;<b>World</b> &amp; friends</p>"
        b"<div>Line&#32;2</div><ul><li>one<li>two</ul><!-- hidden --><p>&lt;tag&gt;</p></body></html>"
    )
    parsed = mail(b"Subject: news\nContent-Type: text/html; charset=utf-8\n", html)
    assert parsed.text_body == "Hello World & friends\n\nLine 2\n\n- one\n- two\n\n<tag>"
    assert parsed.html_body == html.decode()
    assert parsed.problems == []


def test_multipart_alternative_prefers_plain_for_text_and_html_for_html() -> None:
    body = (
        b"--a\nContent-Type: text/plain; charset=utf-8\n\nPlain\r\nversion\n"
        b"--a\nContent-Type: text/html; charset=utf-8\n\n<p>HTML version</p>\n--a--\n"
    )
    parsed = mail(b"Subject: alt\nContent-Type: multipart/alternative; boundary=a\n", body)
    assert parsed.text_body == "Plain\nversion"
    assert parsed.html_body == "<p>HTML version</p>"
    assert parsed.attachments == []


def test_mixed_inline_text_parts_are_joined_and_attachments_kept_apart() -> None:
    body = (
        b"--m\nContent-Type: text/plain\n\nfirst\n"
        b"--m\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\nJVBERi0xLjQ=\n"
        b"--m\nContent-Type: text/plain\n\nsecond\n"
        b"--m\nContent-Type: text/plain\nContent-Disposition: attachment; filename=notes.txt\n\n"
        b"notes\n--m--\n"
    )
    parsed = mail(b"Subject: mixed\nContent-Type: multipart/mixed; boundary=m\n", body)
    assert parsed.text_body == "first\nsecond"
    assert [(a.filename, a.content_type, a.payload, a.is_inline) for a in parsed.attachments] == [
        ("attachment-1.pdf", "application/pdf", b"%PDF-1.4", False),
        ("notes.txt", "text/plain", b"notes", False),
    ]


def test_crlf_bodies_come_out_with_lf() -> None:
    raw = (HEAD + b"Subject: crlf\nContent-Type: text/plain; charset=utf-8\n\nline 1\nline 2\n").replace(
        b"\n", b"\r\n"
    )
    parsed = parse_email(raw)
    assert parsed.text_body == "line 1\nline 2\n"
    assert parsed.subject == "crlf"


def test_nul_characters_are_stripped_everywhere() -> None:
    parsed = mail(
        b"Subject: a\x00b =?utf-8?q?c=00d?=\nContent-Type: text/html; charset=utf-8\n",
        b"<p>te\x00xt</p>\n",
    )
    assert parsed.subject == "ab cd"
    assert parsed.text_body == "text"
    assert parsed.html_body == "<p>text</p>\n"
    assert storable(parsed) == []


NESTED = (
    b"From: Carol <carol@example.net>\nTo: alice@example.com\nSubject: Original message\n"
    b"Date: Sun, 2 Mar 2025 09:00:00 +0000\nMessage-ID: <orig@example.net>\n"
    b"Content-Type: multipart/mixed; boundary=inner\n\n"
    b"--inner\nContent-Type: text/plain\n\nnested text\n"
    b"--inner\nContent-Type: application/pdf\nContent-Disposition: attachment; filename=inner.pdf\n"
    b"Content-Transfer-Encoding: base64\n\nJVBERi0=\n--inner--\n"
)


@pytest.mark.parametrize("linesep", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
def test_nested_message_is_one_attachment_with_its_bytes(linesep: bytes) -> None:
    raw = (
        HEAD + b"Subject: Fwd: Original message\nContent-Type: multipart/mixed; boundary=outer\n\n"
        b"--outer\nContent-Type: text/plain\n\nSee below.\n"
        b"--outer\nContent-Type: message/rfc822\nContent-Disposition: attachment\n\n"
        + NESTED
        + b"--outer--\n"
    ).replace(b"\n", linesep)
    parsed = parse_email(raw)
    assert parsed.text_body == "See below."
    assert len(parsed.attachments) == 1
    attachment = parsed.attachments[0]
    assert (attachment.filename, attachment.content_type, attachment.is_inline) == (
        "Original message.eml",
        "message/rfc822",
        False,
    )
    assert attachment.payload == NESTED.replace(b"\n", linesep)
    assert parse_email(attachment.payload).attachments[0].filename == "inner.pdf"


def test_base64_encoded_nested_message_is_decoded() -> None:
    encoded = base64.encodebytes(NESTED)
    parsed = mail(
        b"Subject: fwd\nContent-Type: multipart/mixed; boundary=o\n",
        b"--o\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n" + encoded + b"--o--\n",
    )
    assert [(a.filename, a.payload) for a in parsed.attachments] == [("Original message.eml", NESTED)]
    assert parsed.problems == ["part 1.1: base64-encoded attached message, decoded"]


def test_inline_cid_image_is_flagged_inline() -> None:
    body = (
        b'--r\nContent-Type: text/html; charset=us-ascii\n\n<p>Logo: <img src="cid:logo%40example.com"></p>\n'
        b"--r\nContent-Type: image/png\nContent-ID: <logo@example.com>\nContent-Transfer-Encoding: base64\n\n"
        b"iVBORw0KGgo=\n"
        b"--r\nContent-Type: image/png\nContent-ID: <unused@example.com>\n\n.\n"
        b"--r\nContent-Type: image/gif\nContent-Disposition: inline; filename=smiley.gif\n\nGIF\n--r--\n"
    )
    parsed = mail(b"Subject: logo\nContent-Type: multipart/related; boundary=r\n", body)
    assert parsed.text_body == "Logo:"
    assert [(a.filename, a.content_id, a.is_inline, a.payload) for a in parsed.attachments] == [
        ("attachment-1.png", "logo@example.com", True, b"\x89PNG\r\n\x1a\n"),
        ("attachment-2.png", "unused@example.com", False, b"."),
        ("smiley.gif", "", True, b"GIF"),
    ]


def test_multipart_without_semicolon_before_boundary_is_recovered() -> None:
    body = b"--b\nContent-Type: text/plain\n\nhello\n--b\nContent-Type: image/png\n\nPNG\n--b--\n"
    parsed = mail(b'Subject: x\nContent-Type: multipart/mixed\n boundary="b"\n', body)
    assert parsed.text_body == "hello"
    assert [(a.filename, a.payload) for a in parsed.attachments] == [("attachment-1.png", b"PNG")]
    assert parsed.problems == [
        "part 1: A message claimed to be a multipart but had no boundary parameter"
        " (NoBoundaryInMultipartDefect)",
        "part 1: A message claimed to be a multipart but no subparts were found"
        " (MultipartInvariantViolationDefect)",
        "part 1: malformed Content-Type, boundary recovered",
    ]


def test_header_name_with_space_before_colon_does_not_end_the_headers() -> None:
    parsed = parse_email(b"Subject : spaced\nFrom: a@example.com\n\nbody")
    assert (parsed.subject, parsed.from_address, parsed.text_body) == ("spaced", "a@example.com", "body")


def test_damaged_base64_keeps_what_is_readable() -> None:
    parsed = mail(
        b"Subject: x\nContent-Type: multipart/mixed; boundary=b\n",
        b"--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
        b"YWJj\nZGV\n--b--\n",
    )
    assert [a.payload for a in parsed.attachments] == [b"abcde"]  # "ZGV" still holds two bytes
    assert parsed.problems == ["part 1.1: damaged base64, decoded what was readable"]


def test_empty_input() -> None:
    parsed = parse_email(b"")
    assert isinstance(parsed, ParsedEmail)
    assert (parsed.subject, parsed.text_body, parsed.html_body, parsed.attachments, parsed.headers) == (
        "",
        "",
        "",
        [],
        [],
    )
    assert parsed.problems == [
        "empty message",
        "missing From header",
        "missing Date header",
        "missing Message-ID header",
    ]


def test_random_binary_garbage() -> None:
    rng = random.Random(20250303)
    for _ in range(50):
        parsed = parse_email(rng.randbytes(rng.randint(1, 4096)))
        assert isinstance(parsed, ParsedEmail)
        assert "missing From header" in parsed.problems
        assert [p for p in parsed.problems if "parser failed" in p] == []
        assert storable(parsed) == []
        assert "\r" not in parsed.subject
        assert "\n" not in parsed.subject


def test_deep_nesting_is_bounded() -> None:
    body = b"Content-Type: text/plain\n\nleaf\n"
    for level in range(60):
        body = b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n%s--b%d--\n" % (
            level,
            level,
            body,
            level,
        )
    parsed = parse_email(b"From: a@example.com\n" + body)
    assert parsed.text_body == ""
    assert any(p.endswith("nested deeper than 40 levels, skipped") for p in parsed.problems)
    assert parsed.from_address == "a@example.com"


def test_nesting_beyond_the_stdlib_recursion_limit_still_gives_the_headers() -> None:
    body = b"Content-Type: text/plain\n\nleaf\n"
    for level in range(1500):
        body = b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n%s--b%d--\n" % (
            level,
            level,
            body,
            level,
        )
    parsed = parse_email(b"From: a@example.com\nSubject: deep\n" + body)
    assert (parsed.from_address, parsed.subject, parsed.text_body) == ("a@example.com", "deep", "")
    assert "MIME structure unreadable: only the headers were read" in parsed.problems


def test_hostile_html_is_converted_in_linear_time() -> None:
    # html.parser needs ~17 s for the first of these on Python 3.11; the limit is generous for CI
    for html in ("<!--" * 50000, "<?" * 100000, "<a " * 100000, "<script>" * 30000):
        parsed = mail(b"Subject: x\nContent-Type: text/html\n", html.encode())
        assert parsed.text_body == ""
    assert html_to_text("x < y and <b>bold</b>") == "x < y and bold"


def test_empty_result_constructor() -> None:
    assert ParsedEmail.empty(problem="parser crashed").problems == ["parser crashed"]
    assert ParsedAttachment("a.bin", "application/octet-stream", b"abc", "", False).size == 3


@pytest.mark.slow
def test_30_mb_base64_attachment_is_decoded_exactly() -> None:
    data = random.Random(0).randbytes(30 * 1024 * 1024)
    raw = (
        HEAD + b"Subject: big\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n"
        b"--b\nContent-Type: text/plain\n\nsee attachment\n"
        b"--b\nContent-Type: application/octet-stream\nContent-Disposition: attachment; filename=big.bin\n"
        b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(data) + b"--b--\n"
    ).replace(b"\n", b"\r\n")
    parsed = parse_email(raw)
    assert parsed.text_body == "see attachment"
    assert [(a.filename, a.size) for a in parsed.attachments] == [("big.bin", 30 * 1024 * 1024)]
    assert parsed.attachments[0].payload == data
    assert parsed.problems == []
