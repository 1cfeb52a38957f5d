"""The poll never stores our own sent message again: a fetched message with the Message-ID of an
outgoing email of the mailbox and From the mailbox's address is that email, whatever the server
changed in its bytes; a stranger reusing our Message-ID is stored."""

import logging

import pytest

from mailboxes.models import Email, EmailDirection
from mailboxes.services.storing import email_store_fetched
from tests.factories import MailboxFactory, outbound_message

pytestmark = pytest.mark.django_db


@pytest.fixture
def outbound():
    return outbound_message(mailbox=MailboxFactory(email="support@acme.example", label="Support"))


def raw_of(outbound) -> bytes:
    with outbound.email.raw.open("rb") as stored:
        return stored.read()


def fetch(outbound, raw: bytes, uid: int = 7):
    return email_store_fetched(
        mailbox=outbound.email.mailbox, uidvalidity=1, uid=uid, raw=raw, internal_date=None, is_history=False
    )


def with_message_id(raw: bytes, spelled: str) -> bytes:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"message-id:")]
    return b"\r\n".join([*lines, b"Message-ID: " + spelled.encode()]) + b"\r\n\r\n" + body


def test_an_exact_copy_is_the_outgoing_email(outbound):
    outcome = fetch(outbound, raw_of(outbound))
    assert (outcome.email, outcome.duplicate_of) == (None, outbound.email_id)
    assert Email.objects.count() == 1


def test_a_copy_with_an_extra_received_header_is_the_outgoing_email(outbound):
    raw = b"Received: from mx.acme.example by imap.acme.example; Tue, 1 Dec 2026 12:00:00 +0000\r\n" + raw_of(
        outbound
    )
    assert fetch(outbound, raw).duplicate_of == outbound.email_id
    assert Email.objects.count() == 1


def test_a_copy_whose_body_the_server_changed_is_the_outgoing_email(outbound, caplog):
    raw = raw_of(outbound) + b"-- \r\nScanned by the provider's antivirus\r\n"
    with caplog.at_level(logging.INFO, logger="mailboxes.services.storing"):
        outcome = fetch(outbound, raw)
    assert (outcome.email, outcome.duplicate_of) == (None, outbound.email_id)
    assert Email.objects.count() == 1
    assert f"our own sent message (email {outbound.email_id}), not stored again" in caplog.text


@pytest.mark.parametrize(
    "spelling",
    [
        "{id}",  # as sent
        "{bare}",  # without angle brackets
        "  {id}  ",
        "\r\n {id}",  # folded onto the next line
        "<{upper}>",  # the case changed by a server
        "(comment) {id}",
    ],
)
def test_a_copy_with_the_message_id_spelled_otherwise_is_the_outgoing_email(outbound, spelling):
    message_id = outbound.email.message_id
    bare = message_id.strip("<>")
    spelled = spelling.format(id=message_id, bare=bare, upper=bare.upper())
    raw = with_message_id(raw_of(outbound) + b"footer\r\n", spelled)
    assert fetch(outbound, raw).duplicate_of == outbound.email_id
    assert Email.objects.count() == 1


def test_a_copy_from_the_mailbox_address_in_other_case_is_the_outgoing_email(outbound):
    raw = raw_of(outbound).replace(b"<support@acme.example>", b"<Support@ACME.example>") + b"footer\r\n"
    assert fetch(outbound, raw).duplicate_of == outbound.email_id


def test_a_stranger_reusing_our_message_id_with_another_body_is_stored(outbound):
    raw = raw_of(outbound).replace(b"support@acme.example", b"mallory@evil.example") + b"buy now\r\n"
    outcome = fetch(outbound, raw)
    assert outcome.email is not None
    assert (outcome.email.direction, outcome.email.from_address) == (
        EmailDirection.INCOMING,
        "mallory@evil.example",
    )
    assert outcome.email.message_id == outbound.email.message_id


def test_a_stranger_reusing_our_message_id_and_body_is_stored_once(outbound):
    raw = raw_of(outbound).replace(b"support@acme.example", b"mallory@evil.example")
    first = fetch(outbound, raw, uid=7)
    assert first.email is not None
    assert first.email.from_address == "mallory@evil.example"
    again = fetch(outbound, raw, uid=8)
    assert (again.email, again.duplicate_of) == (None, first.email.pk)
    assert Email.objects.count() == 2


def test_our_message_id_in_another_mailbox_is_stored(outbound):
    other = MailboxFactory(email="support@acme.example", label="Other")
    outcome = email_store_fetched(
        mailbox=other,
        uidvalidity=1,
        uid=1,
        raw=raw_of(outbound) + b"x\r\n",
        internal_date=None,
        is_history=False,
    )
    assert outcome.email is not None
