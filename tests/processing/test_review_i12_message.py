"""Review of issue 12 (answering), the message bytes: hostile attachment metadata.

Finding R3: an attachment's filename (an agent's upload, or the stored filename of a forwarded
attachment of hostile mail, decoded once by our parser) that is itself an RFC 2047 encoded word
of CR LF is decoded again by the email library while writing the Content-Disposition parameter:
the CR LF reaches the wire and starts headers (or the body) of the MIME part.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processing.answer_drafts import OutgoingAttachment, answer_message_build
from tests.hostile import encoded_words

PART_HEADERS = ["Content-Disposition", "Content-Transfer-Encoding", "Content-Type", "MIME-Version"]


def build_with(attachment: OutgoingAttachment) -> bytes:
    return answer_message_build(
        from_name="Support",
        from_address="support@acme.example",
        to=[("Ann", "ann@customer.example")],
        cc=[],
        subject="Re: Printer",
        date=datetime(2025, 3, 14, 9, 26, tzinfo=UTC),
        message_id="<m1@acme.example>",
        in_reply_to="",
        references=[],
        text="Hello",
        html_body="<p>Hello</p>",
        attachments=[attachment],
    )


def attachment_part_headers(raw: bytes) -> list[str]:
    parsed = message_from_bytes(raw, policy=default)
    (part,) = [part for part in parsed.walk() if part.get_content_disposition() == "attachment"]
    return sorted(part.keys())


def b_word(text: str) -> str:
    return f"=?utf-8?b?{base64.b64encode(text.encode()).decode()}?="


@pytest.mark.parametrize(
    "filename",
    [
        b_word("\r\nBcc: evil@x.example"),
        "=?utf-8?q?a=0D=0AX-Evil:_1?=.pdf",
        b_word("\r\n\r\n--fake-boundary\r\nContent-Type: text/html\r\n\r\n<p>forged</p>"),
        "invoice " + b_word("\n") + "X-Evil: 1.pdf",
        b_word(b_word("\r\nX-Evil: 1")),  # doubly encoded: two rounds of decoding
    ],
)
def test_r3_hostile_filename_never_adds_a_header_to_the_attachment_part(filename):
    raw = build_with(OutgoingAttachment(filename=filename, content_type="application/pdf", data=b"%PDF"))
    assert attachment_part_headers(raw) == PART_HEADERS
    assert b"forged" not in raw


hostile_text = st.lists(
    st.sampled_from(["a", "é", "\r", "\n", "\r\n", "X-Evil: 1", ":", " ", "\x00", "=?", '"', ";", "\u2028"]),
    max_size=30,
).map("".join)


@settings(max_examples=150, deadline=None)
@given(filename=hostile_text, content_id=hostile_text, encoded=st.booleans())
def test_r3_hostile_attachment_metadata_never_adds_a_header(filename, content_id, encoded):
    if encoded:
        filename, content_id = encoded_words(filename or "x"), encoded_words(content_id or "x")
    raw = build_with(
        OutgoingAttachment(filename=filename, content_type="image/png", data=b"png", content_id=content_id)
    )
    raw.decode("ascii")
    headers = attachment_part_headers(raw) if b"attachment" in raw else []
    assert set(headers) <= {*PART_HEADERS, "Content-ID"}


@pytest.mark.parametrize(
    ("filename", "sent_as"),
    [("Rechnung März 2025.pdf", "Rechnung März 2025.pdf"), (b_word("Devis été.pdf"), "Devis été.pdf")],
)
def test_r3_ordinary_filenames_are_sent_as_they_read(filename, sent_as):
    raw = build_with(OutgoingAttachment(filename=filename, content_type="application/pdf", data=b"%PDF"))
    parsed = message_from_bytes(raw, policy=default)
    assert [part.get_filename() for part in parsed.iter_attachments()] == [sent_as]
