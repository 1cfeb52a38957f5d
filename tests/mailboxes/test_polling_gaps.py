"""A UID that an IMAP answer leaves out is never passed over unless a fresh UID SEARCH says it is
gone; one the server never delivers holds the cursor for a bounded number of polls only."""

import pytest

from mailboxes.imap import ImapConnection
from mailboxes.models import Email, Mailbox, ProcessingStatus
from mailboxes.services import mailbox_poll
from tests.factories import MailboxFactory
from tests.servers.fake_imap import FakeImapServer

pytestmark = [pytest.mark.django_db]


def message(n: int) -> bytes:
    return (
        f"From: Sender {n} <sender{n}@example.com>\r\n"
        "To: support@example.com\r\n"
        f"Subject: Message {n}\r\n"
        f"Message-ID: <gap-{n}@example.com>\r\n"
        "Date: Mon, 2 Nov 2026 10:00:00 +0000\r\n"
        "\r\n"
        f"Body of message {n}.\r\n"
    ).encode()


@pytest.fixture
def fake_imap():
    with FakeImapServer() as server:
        yield server


def fake_mailbox(server: FakeImapServer, *, history_import: str = "none") -> Mailbox:
    return MailboxFactory(
        imap_host=server.host,
        imap_port=server.port,
        imap_security="none",
        imap_username="user",
        imap_password="pass",
        history_import=history_import,
    )


def polled_empty(server: FakeImapServer) -> Mailbox:
    """A mailbox whose first poll saw the folder empty: everything appended later is new."""
    mailbox = fake_mailbox(server)
    first = mailbox_poll(mailbox_id=mailbox.pk)
    assert (first.error, first.new_email_ids) == ("", [])
    return mailbox


def stored_uids() -> list[int]:
    return sorted(Email.objects.values_list("uid", flat=True))


def cursor(mailbox: Mailbox) -> int:
    return Mailbox.objects.get(pk=mailbox.pk).imap_last_uid


def test_body_left_out_of_a_batch_is_fetched_again_alone_and_stored(fake_imap):
    mailbox = polled_empty(fake_imap)
    for n in (1, 2, 3):
        fake_imap.append(message(n))
    fake_imap.omit_body_in_batch = {2}
    result = mailbox_poll(mailbox_id=mailbox.pk)
    assert (result.error, len(result.new_email_ids)) == ("", 3)
    assert fake_imap.body_fetches == [[1, 2, 3], [2]]
    assert Email.objects.get(uid=2).subject == "Message 2"
    assert cursor(mailbox) == 3


def test_body_never_delivered_holds_the_cursor_before_it_for_a_bounded_number_of_polls(fake_imap, settings):
    settings.MAILHUB_UNDELIVERED_MAX_POLLS = 3
    mailbox = polled_empty(fake_imap)
    for n in (1, 2, 3):
        fake_imap.append(message(n))
    fake_imap.omit_body_always = {2}

    first = mailbox_poll(mailbox_id=mailbox.pk)
    assert first.error.startswith("IMAP server lists UID(s) 2 but did not deliver them")
    assert first.error_is_permanent is False
    assert (len(first.new_email_ids), stored_uids(), cursor(mailbox)) == (2, [1, 3], 1)

    fake_imap.append(message(4))  # arrives while UID 2 holds the cursor: not delayed
    fake_imap.body_fetches.clear()
    second = mailbox_poll(mailbox_id=mailbox.pk)
    assert second.error == first.error
    assert fake_imap.body_fetches == [[2, 4], [2]]  # UID 3, stored already, is not fetched again
    assert (len(second.new_email_ids), second.duplicate_count) == (1, 0)
    assert (stored_uids(), cursor(mailbox)) == ([1, 3, 4], 1)
    assert Mailbox.objects.get(pk=mailbox.pk).imap_undelivered_polls == {"2": 2}

    third = mailbox_poll(mailbox_id=mailbox.pk)
    assert third.error == ""
    placeholder = Email.objects.get(uid=2)
    assert placeholder.parse_problem == "server did not deliver this message"
    assert (placeholder.size, placeholder.processing_status) == (0, ProcessingStatus.SKIPPED)
    refreshed = Mailbox.objects.get(pk=mailbox.pk)
    assert (refreshed.imap_last_uid, refreshed.imap_undelivered_polls) == (4, {})
    assert (refreshed.consecutive_failures, refreshed.last_error) == (0, "")
    assert stored_uids() == [1, 2, 3, 4]


def test_batch_fetch_answered_no_is_fetched_again_alone_and_stored(fake_imap):
    mailbox = polled_empty(fake_imap)
    for n in (1, 2, 3):
        fake_imap.append(message(n))
    fake_imap.no_on_batch_fetch = True
    result = mailbox_poll(mailbox_id=mailbox.pk)
    assert (result.error, len(result.new_email_ids)) == ("", 3)
    assert fake_imap.body_fetches == [[1, 2, 3], [1], [2], [3]]
    assert (stored_uids(), cursor(mailbox)) == ([1, 2, 3], 3)


def test_body_left_out_and_uid_gone_per_search_is_passed_over(fake_imap):
    mailbox = polled_empty(fake_imap)
    for n in (1, 2, 3):
        fake_imap.append(message(n))
    fake_imap.expunge_on_body_fetch = {2}
    result = mailbox_poll(mailbox_id=mailbox.pk)
    assert (result.error, len(result.new_email_ids)) == ("", 2)
    assert "UID SEARCH UID 2" in fake_imap.commands
    assert (stored_uids(), cursor(mailbox)) == ([1, 3], 3)


def test_uid_left_out_of_the_size_listing_is_still_fetched_alone_and_stored(fake_imap):
    mailbox = polled_empty(fake_imap)
    for n in (1, 2, 3):
        fake_imap.append(message(n))
    fake_imap.omit_size = {2}
    result = mailbox_poll(mailbox_id=mailbox.pk)
    assert (result.error, len(result.new_email_ids)) == ("", 3)
    assert fake_imap.body_fetches == [[1], [2], [3]]  # unknown size: alone, in UID order
    assert (stored_uids(), cursor(mailbox)) == ([1, 2, 3], 3)


def test_no_uidnext_with_history_none_leaves_the_existing_mail_alone(fake_imap):
    for n in (1, 2, 3):
        fake_imap.append(message(n))
    fake_imap.send_uidnext = False
    mailbox = fake_mailbox(fake_imap, history_import="none")
    result = mailbox_poll(mailbox_id=mailbox.pk)
    assert (result.error, result.new_email_ids, result.history_count) == ("", [], 0)
    refreshed = Mailbox.objects.get(pk=mailbox.pk)
    assert (refreshed.imap_last_uid, refreshed.imap_history_last_uid) == (3, 3)
    assert Email.objects.count() == 0

    fake_imap.append(message(4))
    later = mailbox_poll(mailbox_id=mailbox.pk)
    assert (later.error, len(later.new_email_ids)) == ("", 1)
    assert Email.objects.get().uid == 4


def test_no_uidnext_with_history_all_stores_the_existing_mail_as_history(fake_imap):
    for n in (1, 2, 3):
        fake_imap.append(message(n))
    fake_imap.send_uidnext = False
    mailbox = fake_mailbox(fake_imap, history_import="all")
    result = mailbox_poll(mailbox_id=mailbox.pk)
    assert (result.error, result.new_email_ids, result.history_count) == ("", [], 3)
    assert set(Email.objects.values_list("is_history", "processing_status")) == {
        (True, ProcessingStatus.SKIPPED)
    }


def test_no_uidnext_on_an_empty_folder_makes_the_first_message_new(fake_imap):
    fake_imap.send_uidnext = False
    mailbox = polled_empty(fake_imap)
    fake_imap.append(message(1))
    assert len(mailbox_poll(mailbox_id=mailbox.pk).new_email_ids) == 1


def test_unsolicited_fetch_flags_and_answers_for_unasked_uids_store_each_message_once(fake_imap, settings):
    settings.MAILHUB_FETCH_BATCH_MESSAGES = 2
    mailbox = polled_empty(fake_imap)
    for n in (1, 2, 3, 4):
        fake_imap.append(message(n))
    fake_imap.expunge(1)  # UIDs 2, 3, 4 at sequence numbers 1, 2, 3: the two keys differ
    fake_imap.unsolicited_flags = True  # "* 2 FETCH (FLAGS ...)" without UID, for every message
    fake_imap.answer_unasked = True  # the batch [2, 3] is also answered for UID 4
    result = mailbox_poll(mailbox_id=mailbox.pk)
    assert (result.error, len(result.new_email_ids), result.duplicate_count) == ("", 3, 0)
    assert fake_imap.body_fetches == [[2, 3], [4]]
    assert sorted(Email.objects.values_list("uid", "subject")) == [
        (2, "Message 2"),
        (3, "Message 3"),
        (4, "Message 4"),
    ]
    assert cursor(mailbox) == 4


@pytest.mark.integration
def test_dovecot_expunge_between_listing_and_fetch_is_passed_over_after_search(
    imap_account, dovecot_server, monkeypatch
):
    mailbox = MailboxFactory.on_dovecot(
        imap_account,
        history_import="none",
    )
    assert mailbox_poll(mailbox_id=mailbox.pk).error == ""
    for n in (1, 2, 3):
        imap_account.append(message(n))
    real_fetch = ImapConnection.fetch_messages
    outcomes = []

    def expunge_then_fetch(connection, uids):
        if not outcomes:  # the size listing is done: another client expunges UID 2 now
            with dovecot_server.client(imap_account.username) as other:
                other.select_folder("INBOX")
                other.delete_messages([2])
                other.expunge()
            # Dovecot still delivers a message the session has not been told is expunged; a
            # NOOP tells it (RFC 3501 §7.4.1), as any later command may.
            connection._client.noop()
        outcomes.append(real_fetch(connection, uids))
        return outcomes[-1]

    monkeypatch.setattr(ImapConnection, "fetch_messages", expunge_then_fetch)
    result = mailbox_poll(mailbox_id=mailbox.pk)
    assert (result.error, len(result.new_email_ids)) == ("", 2)
    assert [(outcome.gone, outcome.undelivered) for outcome in outcomes] == [([2], [])]
    assert (stored_uids(), cursor(mailbox)) == ([1, 3], 3)


@pytest.mark.parametrize("what", ["uidvalidity", "uid"])
@pytest.mark.parametrize("value", [2**32, 2**63, 2**64 + 5])
def test_a_uid_or_uidvalidity_outside_rfc_3501_is_a_clear_permanent_error(fake_imap, what, value):
    """RFC 3501 §9: both are nz-number, 32-bit unsigned. A larger one from a broken or hostile
    server would fit no database column: it is refused by name, not stored in a failing loop."""
    mailbox = polled_empty(fake_imap) if what == "uid" else fake_mailbox(fake_imap)
    if what == "uidvalidity":
        fake_imap.uidvalidity = value
    else:
        fake_imap._next_uid = value
        fake_imap.send_uidnext = False  # else UIDNEXT (value + 1) is refused first, as it should be
    fake_imap.append(message(1))
    result = mailbox_poll(mailbox_id=mailbox.pk)
    assert f"sent {what.upper()} '{value}', outside RFC 3501's 1..4294967295" in result.error
    assert result.error_is_permanent
    assert Email.objects.count() == 0
    assert Mailbox.objects.get(pk=mailbox.pk).last_error == result.error
