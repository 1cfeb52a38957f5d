"""Loop protection: every suppression rule gives its reason; an ordinary email may be answered."""

import pytest

from autoresponse.loops import LoopCheckInput, reply_recipient, suppression_reason

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


def check(extra_headers=(), sender="jane.doe@example.com", headers=None):
    base = list(NORMAL_HEADERS if headers is None else headers)
    return suppression_reason(
        LoopCheckInput(headers=base + list(extra_headers), sender_address=sender, own_addresses=OWN)
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
        (("Reply-To", "Sales <SALES@acme.test>"), "Reply-To is one of our own mailboxes"),
        (("Reply-To", "no-reply@shop.example"), "Reply-To is a robot (no-reply@shop.example)"),
    ],
)
def test_suppressed_with_reason(header, reason):
    assert check([header]) == reason


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


# --------------------------------------------------------------------------- reply_recipient


def test_reply_to_is_honoured():
    assert (
        reply_recipient(reply_to=[("Jane", "jane.private@example.org")], sender_address="jane@example.com")
        == "jane.private@example.org"
    )


def test_first_valid_reply_to_address_wins():
    reply_to = [("", ""), ("Broken", "not-an-address"), ("B", "<b@example.org>"), ("C", "c@example.org")]
    assert reply_recipient(reply_to=reply_to, sender_address="jane@example.com") == "b@example.org"


def test_without_reply_to_the_sender_is_answered():
    assert reply_recipient(reply_to=[], sender_address=" Jane@Example.com ") == "Jane@Example.com"
    assert (
        reply_recipient(reply_to=[("x", "broken")], sender_address="<jane@example.com>") == "jane@example.com"
    )


def test_no_address_at_all_gives_empty_string():
    assert reply_recipient(reply_to=[], sender_address="") == ""
    assert reply_recipient(reply_to=[("", "nope")], sender_address="also nope") == ""
