"""Loop protection: every suppression rule gives its reason; an ordinary email may be answered."""

import pytest

from autoresponse.loops import LoopCheckInput, address_key, answered_address, suppression_reason
from mailboxes.parsing import parse_email

OWN = frozenset({"support@acme.test", "sales@acme.test"})

NORMAL_HEADERS = [
    ("Return-Path", "<jane.doe@example.com>"),
    ("From", "Jane Doe <jane.doe@example.com>"),
    ("To", "support@acme.test"),
    ("Subject", "Where is my order?"),
    ("Auto-Submitted", "no"),
    ("Content-Type", "multipart/alternative; boundary=abc"),
    ("X-Auto-Response-Suppress", "None"),
    ("Precedence", "first-class"),
]


def check(extra_headers=(), sender="jane.doe@example.com", headers=None, reply_to=()):
    base = list(NORMAL_HEADERS if headers is None else headers)
    answered = answered_address(reply_to=list(reply_to), sender_address=sender)
    return suppression_reason(
        LoopCheckInput(
            headers=base + list(extra_headers), sender_address=sender, own_addresses=OWN, answered=answered
        )
    )


def test_ordinary_email_may_be_answered():
    assert check() is None


def test_ordinary_email_without_any_optional_header_may_be_answered():
    assert check(headers=[("From", "jane@example.com"), ("Subject", "Hi")]) is None


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        # RFC 3834 §2: any Auto-Submitted value other than "no".
        (("Auto-Submitted", "auto-replied"), "Auto-Submitted: auto-replied"),
        (("auto-submitted", "Auto-Generated; foo=bar"), "Auto-Submitted: auto-generated"),
        (("Auto-Submitted", "auto-notified (delivery report)"), "Auto-Submitted: auto-notified"),
        (("AUTO-SUBMITTED", "  auto-replied  "), "Auto-Submitted: auto-replied"),
        (("Auto-Submitted", ""), "Auto-Submitted: (empty)"),
        (("X-Auto-Response-Suppress", "All"), "X-Auto-Response-Suppress: All"),
        (("X-Auto-Response-Suppress", "OOF"), "X-Auto-Response-Suppress: OOF"),
        (("X-Auto-Response-Suppress", "AutoReply"), "X-Auto-Response-Suppress: AutoReply"),
        (("X-Auto-Response-Suppress", "DR"), "X-Auto-Response-Suppress: DR"),
        (("X-Auto-Response-Suppress", "NDR"), "X-Auto-Response-Suppress: NDR"),
        (("X-Auto-Response-Suppress", "RN"), "X-Auto-Response-Suppress: RN"),
        (("x-auto-response-suppress", "rn, nrn"), "X-Auto-Response-Suppress: rn, nrn"),
        (("Precedence", "bulk"), "Precedence: bulk"),
        (("Precedence", "junk"), "Precedence: junk"),
        (("PRECEDENCE", "List"), "Precedence: list"),
        (("Precedence", "auto_reply"), "Precedence: auto_reply"),
        (("List-Id", "Announcements <announce.lists.example.com>"), "List-Id header present (mailing list)"),
        (("List-Unsubscribe", "<mailto:unsub@example.com>"), "List-Unsubscribe header present"),
        (("Return-Path", "<>"), "empty Return-Path (<>)"),
        (("Return-Path", "< >"), "empty Return-Path (<>)"),
        (("Return-Path", ""), "empty Return-Path (<>)"),
        (
            ("Content-Type", 'multipart/report; report-type=delivery-status; boundary="x"'),
            "delivery status notification (multipart/report)",
        ),
        (
            ("Content-Type", "Multipart/Report; report-type=disposition-notification"),
            "delivery status notification (multipart/report)",
        ),
        (("X-Autoreply", "yes"), "X-Autoreply header present"),
        (("X-Autorespond", "Vacation"), "X-Autorespond header present"),
        (("X-Loop", "helpdesk@example.com"), "X-Loop header present"),
    ],
)
def test_suppressed_with_reason(header, reason):
    assert check([header]) == reason


@pytest.mark.parametrize(
    ("reply_to", "reason"),
    [
        (("Sales", "SALES@acme.test"), "Reply-To is one of our own mailboxes"),
        (("", "no-reply@shop.example"), "Reply-To is a robot (no-reply@shop.example)"),
    ],
)
def test_answered_reply_to_is_checked(reply_to, reason):
    assert check(reply_to=[reply_to]) == reason


@pytest.mark.parametrize(
    "sender",
    [
        "mailer-daemon@mx.example.com",
        "MAILER-DAEMON@mx.example.com",
        "postmaster@example.com",
        "no-reply@example.com",
        "noreply@example.com",
        "NoReply@example.com",
        "no_reply@example.com",
        "do-not-reply@example.com",
        "donotreply@example.com",
        "bounce@example.com",
        "bounces@lists.example.com",
        "bounces+abc123@mail.example.com",
        "billing-noreply@example.com",
        "noreply-billing@example.com",
        "shop.no-reply@example.com",
    ],
)
def test_robot_senders_are_suppressed(sender):
    assert check(sender=sender) == f"sender is a robot ({sender.lower()})"


@pytest.mark.parametrize(
    "sender",
    [
        "jane.bouncer@example.com",
        "replies@example.com",
        "norbert@example.com",
        "postmasters-club@example.com",
    ],
)
def test_people_with_similar_names_are_not_robots(sender):
    assert check(sender=sender) is None


def test_our_own_mailbox_as_sender_is_suppressed_case_insensitively():
    assert check(sender="Support@ACME.test") == "sender is one of our own mailboxes"
    assert check(sender="<sales@acme.test>") == "sender is one of our own mailboxes"


@pytest.mark.parametrize("sender", ["", "   ", "not-an-address", "@example.com", "jane@"])
def test_no_sender_address(sender):
    assert check(sender=sender) == "no sender address"


def test_auto_submitted_no_is_not_automatic():
    assert check([("Auto-Submitted", "No")]) is None


def test_return_path_with_an_address_is_fine():
    assert check([("Return-Path", "<bounces-123@example.com>")], headers=[]) is None


def test_first_reason_is_the_most_specific():
    headers = [("List-Id", "<x.example.com>"), ("Auto-Submitted", "auto-generated")]
    assert check(headers) == "Auto-Submitted: auto-generated"


# ------------------------------------------------- one parse of Reply-To, from raw bytes to decision


def decide(reply_to_header):
    """What the pipeline does: the MIME parser's Reply-To pairs -> answered address -> loop check."""
    raw = (
        "From: Ann <ann@customer.example>\r\nTo: support@acme.test\r\n"
        f"Reply-To: {reply_to_header}\r\nSubject: Hi\r\nMessage-ID: <m@customer.example>\r\n"
        "Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nHello\r\n"
    ).encode()
    parsed = parse_email(raw)
    answered = answered_address(
        reply_to=[(a.name, a.address) for a in parsed.reply_to], sender_address=parsed.from_address
    )
    reason = suppression_reason(
        LoopCheckInput(
            headers=parsed.headers, sender_address=parsed.from_address, own_addresses=OWN, answered=answered
        )
    )
    return answered, reason


OWN_REASON = "Reply-To is one of our own mailboxes"


@pytest.mark.parametrize(
    ("reply_to_header", "answered", "reason"),
    [
        # RFC 2047 display names that look like addresses: the address in <> is what is answered.
        ("=?utf-8?q?jane=40customer.example?= <support@acme.test>", "support@acme.test", OWN_REASON),
        (
            "=?utf-8?q?jane=40customer.example?= <MAILER-DAEMON@mx.example>",
            "MAILER-DAEMON@mx.example",
            "Reply-To is a robot (mailer-daemon@mx.example)",
        ),
        ("=?utf-8?q?support=40acme.test?= <jane@customer.example>", "jane@customer.example", None),
        # A comma inside a quoted display name does not split the address.
        ('"Doe, support@acme.test" <jane@customer.example>', "jane@customer.example", None),
        ('"Sales, Team" <sales@acme.test>', "sales@acme.test", OWN_REASON),
        # Several addresses: only the first valid one is answered, so only it is checked.
        ("jane@customer.example, support@acme.test", "jane@customer.example", None),
        ("support@acme.test, jane@customer.example", "support@acme.test", OWN_REASON),
        # Our own mailbox in another letter case.
        ("SUPPORT@Acme.Test", "SUPPORT@Acme.Test", OWN_REASON),
        # Group syntax: the members count; an empty group means From is answered.
        (
            "Team: no-reply@shop.example, jane@customer.example;",
            "no-reply@shop.example",
            "Reply-To is a robot (no-reply@shop.example)",
        ),
        ("undisclosed-recipients:;", "ann@customer.example", None),
        # An invalid first address is skipped, for the answer and for the check alike.
        (
            "broken, mailer-daemon@mx.example",
            "mailer-daemon@mx.example",
            "Reply-To is a robot (mailer-daemon@mx.example)",
        ),
        ("broken, sales@acme.test", "sales@acme.test", OWN_REASON),
    ],
)
def test_the_loop_check_tests_the_address_that_is_answered(reply_to_header, answered, reason):
    assert decide(reply_to_header) == (answered, reason)


# --------------------------------------------------------------------------- address_key


@pytest.mark.parametrize(
    ("spelling", "key"),
    [
        ("Victim@Example.COM", "victim@example.com"),
        (" <victim@example.com> ", "victim@example.com"),
        ("victim+1@example.com", "victim@example.com"),
        ("VICTIM+tag+more@example.com", "victim@example.com"),
        ("victim@example.com.", "victim@example.com"),
        ("victim@bücher.example", "victim@xn--bcher-kva.example"),
        ("victim@XN--BCHER-KVA.example", "victim@xn--bcher-kva.example"),
        ("v.i.c.t.i.m@gmail.com", "victim@gmail.com"),
        ("Vic.Tim+x@googlemail.com", "victim@gmail.com"),
    ],
)
def test_address_key_folds_the_spellings_of_one_inbox(spelling, key):
    assert address_key(spelling) == key


def test_address_key_keeps_dots_where_they_matter():
    assert address_key("jane.doe@example.com") != address_key("janedoe@example.com")


# --------------------------------------------------------------------------- answered_address


def test_reply_to_is_honoured():
    assert (
        answered_address(reply_to=[("Jane", "jane.private@example.org")], sender_address="jane@example.com")
        == "jane.private@example.org"
    )


def test_first_valid_reply_to_address_wins():
    reply_to = [("", ""), ("Broken", "not-an-address"), ("B", "<b@example.org>"), ("C", "c@example.org")]
    assert answered_address(reply_to=reply_to, sender_address="jane@example.com") == "b@example.org"


def test_without_reply_to_the_sender_is_answered():
    assert answered_address(reply_to=[], sender_address=" Jane@Example.com ") == "Jane@Example.com"
    assert (
        answered_address(reply_to=[("x", "broken")], sender_address="<jane@example.com>")
        == "jane@example.com"
    )


def test_no_address_at_all_gives_empty_string():
    assert answered_address(reply_to=[], sender_address="") == ""
    assert answered_address(reply_to=[("", "nope")], sender_address="also nope") == ""


def test_padding_the_header_block_past_the_storing_cap_is_not_a_way_around_the_rules():
    """Storing keeps MAX_HEADERS fields: an Auto-Submitted after 500 junk fields is never seen."""
    from mailboxes import limits

    raw = (
        "From: robot@example.org\r\n"
        + "".join(f"X-Pad-{n}: {n}\r\n" for n in range(limits.MAX_HEADERS))
        + "Auto-Submitted: auto-replied\r\n\r\nbody\r\n"
    ).encode()
    parsed = parse_email(raw)
    check = LoopCheckInput(
        headers=parsed.headers,
        sender_address=parsed.from_address,
        own_addresses=frozenset(),
        answered=parsed.from_address,
    )
    assert suppression_reason(check) == "too many header fields to check for automatic mail (over 500)"
