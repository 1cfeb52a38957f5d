"""The one header lookup and the one unfolding rule, shared by the parser and the auto-responder."""

from mailboxes.mime.headers import controls_to_spaces, header_value, header_values, unfold, unfold_header
from mailboxes.parsing import ParsedEmail

HEADERS = [("Received", "a"), ("X-Loop", "one"), ("received", "b"), (" RECEIVED ", None), ("Subject", "s")]


def test_header_values_are_all_values_of_the_name_in_order_whatever_its_case():
    assert header_values(HEADERS, "RECEIVED") == ["a", "b", ""]
    assert header_values(HEADERS, "x-loop") == ["one"]
    assert header_values(HEADERS, "List-Id") == []


def test_header_value_is_the_first_value_or_empty():
    assert header_value(HEADERS, "received") == "a"
    assert header_value(HEADERS, "List-Id") == ""


def test_parsed_email_header_uses_the_same_lookup():
    parsed = ParsedEmail(headers=[("X-Loop", "one"), ("x-loop", "two")])
    assert parsed.header("X-LOOP") == "one"
    assert parsed.header("Precedence") == ""


def test_unfold_removes_only_line_breaks_followed_by_whitespace():
    assert unfold("a\r\n b\n\tc\r\nd\ne") == "a b\tc\r\nd\ne"


def test_unfold_header_also_turns_other_line_breaks_into_spaces():
    problems: list[str] = []
    assert (
        unfold_header("a\r\n b\r\nc\rd\x00e", "Subject header", problems) == "a b  c de"
    )  # CRLF -> two spaces, as before
    assert problems == []


def test_controls_to_spaces_leaves_no_line_break_or_control():
    assert controls_to_spaces("Hi\r\nBcc: x\x00\x1b\x7fy\ud800") == "Hi Bcc: x y?"
