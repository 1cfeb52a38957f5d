"""The pure answer helpers: recipients, subject, quotes, thread headers, and the message bytes,
also for hostile originals (CR/LF in names and subjects, encoded words, huge values)."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default

from hypothesis import given, settings
from hypothesis import strategies as st

from processing.answer_drafts import (
    MAX_QUOTED_CHARS,
    AnswerMode,
    Original,
    answer_message_build,
    answer_recipients,
    answer_subject,
    quote_text,
    thread_headers,
)
from tests.hostile import encoded_words

DATE = datetime(2025, 3, 14, 9, 26, tzinfo=UTC)


def build(**changes):
    values = {
        "from_name": "Support",
        "from_address": "support@acme.example",
        "to": [("Ann", "ann@customer.example")],
        "cc": [],
        "subject": "Re: Printer",
        "date": DATE,
        "message_id": "<m1@acme.example>",
        "in_reply_to": "<q1@customer.example>",
        "references": ["<q1@customer.example>"],
        "text": "Hello",
        "html_body": "<p>Hello</p>",
    }
    values.update(changes)
    return answer_message_build(**values)


def test_subject_prefixes_do_not_pile_up_and_the_token_is_there_once():
    subject = "RE: Fwd: AW[2]: Sv: WG: Antw: Réf: [#1042] Re(3): Printer [#1042]"
    assert (
        answer_subject(mode=AnswerMode.REPLY, subject=subject, case_reference="#1042")
        == "Re: [#1042] Printer"
    )


def test_forward_subject_and_words_that_only_start_like_a_prefix():
    assert answer_subject(mode=AnswerMode.FORWARD, subject="Re: Printer") == "Fwd: Printer"
    assert answer_subject(mode=AnswerMode.REPLY, subject="Reform") == "Re: Reform"


def test_reply_prefers_the_first_valid_reply_to_and_forward_has_nobody():
    original = Original(
        from_address="ann@customer.example", reply_to=[("bad", ""), ("Desk", "desk@customer.example")]
    )
    assert answer_recipients(mode=AnswerMode.REPLY, original=original, own_addresses=[]) == (
        [("Desk", "desk@customer.example")],
        [],
    )
    assert answer_recipients(mode=AnswerMode.FORWARD, original=original, own_addresses=[]) == ([], [])


def test_reply_all_drops_our_own_addresses_under_any_spelling_and_duplicates():
    original = Original(
        from_address="ann@customer.example",
        to=[("", "Support+x@ACME.example"), ("", "ANN@customer.example"), ("", "bob@customer.example")],
    )
    to, cc = answer_recipients(
        mode=AnswerMode.REPLY_ALL, original=original, own_addresses=["support@acme.example"]
    )
    assert to == [("", "ann@customer.example"), ("", "bob@customer.example")]
    assert cc == []


def test_reply_all_to_a_thousand_addresses_keeps_each_once():
    many = [("", f"p{n}@customer.example") for n in range(1000)]
    original = Original(from_address="p0@customer.example", to=many, cc=many)
    to, cc = answer_recipients(mode=AnswerMode.REPLY_ALL, original=original, own_addresses=[])
    assert len(to) == 1000
    assert cc == []


def test_quote_is_bounded_and_says_so():
    quote = quote_text(Original(text_body="z" * (MAX_QUOTED_CHARS + 10), from_address="a@b.example"))
    assert quote.count("z") == MAX_QUOTED_CHARS
    assert "quote cut" in quote


def test_references_are_capped_like_storing_keeps_them():
    refs = [f"<r{n}@x.example>" for n in range(300)]
    in_reply_to, references = thread_headers(Original(message_id="<m@x.example>", references=refs))
    assert in_reply_to == "<m@x.example>"
    assert len(references) == 100
    assert references[0] == "<r0@x.example>"
    assert references[-1] == "<m@x.example>"


def test_empty_from_gives_no_recipient_and_a_usable_quote():
    original = Original()
    assert answer_recipients(mode=AnswerMode.REPLY, original=original, own_addresses=[]) == ([], [])
    assert quote_text(original).startswith("On an unknown date, an unknown sender wrote:")


hostile_text = st.lists(
    st.sampled_from(["a", "é", "\r", "\n", "\r\n", "Bcc: evil@x.example", ":", " ", "\x00", "=?", "\u2028"]),
    max_size=40,
).map("".join)


@settings(max_examples=150, deadline=None)
@given(name=hostile_text, subject=hostile_text, long=st.booleans(), encoded=st.booleans())
def test_hostile_names_and_subjects_never_add_a_header(name, subject, long, encoded):
    if encoded:
        subject = encoded_words(subject or "x")
    if long:
        subject = subject * 200
    original = Original(subject=subject, from_name=name, from_address="ann@customer.example")
    to, _cc = answer_recipients(mode=AnswerMode.REPLY, original=original, own_addresses=[])
    raw = build(
        from_name=name,
        to=to,
        subject=answer_subject(mode=AnswerMode.REPLY, subject=subject, case_reference="#7"),
        text=quote_text(original),
    )
    raw.decode("ascii")  # 7-bit
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    parsed = message_from_bytes(raw, policy=default)
    assert sorted(parsed.keys()) == sorted(
        [
            "From",
            "To",
            "Subject",
            "Date",
            "Message-ID",
            "In-Reply-To",
            "References",
            "MIME-Version",
            "Content-Type",
        ]
    )
    assert parsed["Subject"].strip().startswith("Re: [#7]")  # a long word may be folded to the next line
