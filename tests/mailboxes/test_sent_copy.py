"""The copy of a sent answer in the mailbox's Sent folder, against a real Dovecot: flagged \\Seen,
the same bytes, never two copies (the folder is searched for the Message-ID before each APPEND),
the folder created when missing (TRYCREATE), and never ingested again by the poll."""

from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from django.db import connection
from django.utils import timezone

from mailboxes.encryption import CIPHERTEXT_PREFIX
from mailboxes.imap import ImapConnection, ImapError, imap_session
from mailboxes.models import Email, EmailDirection, OutboundStatus, SentCopyStatus
from mailboxes.services import mailbox_poll
from mailboxes.services.sending import (
    MAX_SENT_COPY_ATTEMPTS,
    outbound_copies_due,
    outbound_copies_reset_stale,
    outbound_copy_to_sent,
)
from tests.factories import MailboxFactory, outbound_message

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.fixture
def mailbox(imap_account):
    return MailboxFactory.on_dovecot(imap_account, email="support@acme.example", history_import="none")


def sent(mailbox, **fields):
    values = {"status": OutboundStatus.SENT, "sent_at": timezone.now()} | fields
    return outbound_message(mailbox=mailbox, **values)


def raw_of(outbound) -> bytes:
    with outbound.email.raw.open("rb") as stored:
        return stored.read()


def test_the_copy_lands_in_the_sent_folder_flagged_seen_with_the_same_bytes(mailbox, imap_account):
    imap_account.create_folder("Sent")
    outbound = sent(mailbox)
    result = outbound_copy_to_sent(outbound_id=outbound.pk)
    assert (result.sent_copy_status, result.sent_copy_error, result.sent_copy_attempts) == (
        SentCopyStatus.DONE,
        "",
        1,
    )
    messages = imap_account.messages("Sent")
    assert list(messages.values()) == [raw_of(outbound)]
    assert list(imap_account.flags("Sent").values()) == [(b"\\Seen",)]


def test_a_second_call_appends_nothing_more(mailbox, imap_account):
    imap_account.create_folder("Sent")
    outbound = sent(mailbox)
    outbound_copy_to_sent(outbound_id=outbound.pk)
    again = outbound_copy_to_sent(outbound_id=outbound.pk)
    assert (again.sent_copy_status, again.sent_copy_attempts) == (SentCopyStatus.DONE, 1)
    assert len(imap_account.messages("Sent")) == 1


def test_a_retry_after_a_lost_append_answer_does_not_append_a_second_copy(mailbox, imap_account, monkeypatch):
    imap_account.create_folder("Sent")
    outbound = sent(mailbox)
    real_append = ImapConnection.append_message

    def stored_then_answer_lost(self, *args, **kwargs):
        real_append(self, *args, **kwargs)  # the server stored it ...
        raise ImapError("IMAP connection to 127.0.0.1 failed: reset", permanent=False)  # ... we never knew

    monkeypatch.setattr(ImapConnection, "append_message", stored_then_answer_lost)
    first = outbound_copy_to_sent(outbound_id=outbound.pk)
    assert first.sent_copy_status == SentCopyStatus.PENDING
    assert first.sent_copy_next_attempt_at > timezone.now()
    monkeypatch.undo()
    first.sent_copy_next_attempt_at = timezone.now() - timedelta(seconds=1)
    first.save(update_fields=["sent_copy_next_attempt_at"])
    second = outbound_copy_to_sent(outbound_id=outbound.pk)
    assert (second.sent_copy_status, second.sent_copy_attempts) == (SentCopyStatus.DONE, 2)
    assert len(imap_account.messages("Sent")) == 1


def test_a_stale_appending_copy_goes_back_to_pending_and_is_not_appended_twice(mailbox, imap_account):
    imap_account.create_folder("Sent")
    outbound = sent(mailbox)
    # The worker appended, then died before recording it.
    imap_account.append(raw_of(outbound), folder="Sent", flags=[b"\\Seen"])
    outbound.sent_copy_status = SentCopyStatus.APPENDING
    outbound.sent_copy_claimed_at = timezone.now() - timedelta(hours=2)
    outbound.save()
    assert outbound_copies_reset_stale(mailbox_id=mailbox.pk) == 1
    assert outbound_copies_due(mailbox_id=mailbox.pk, sent_before=None) == [outbound.pk]
    assert outbound_copy_to_sent(outbound_id=outbound.pk).sent_copy_status == SentCopyStatus.DONE
    assert len(imap_account.messages("Sent")) == 1


def test_a_fresh_appending_copy_is_left_to_its_worker(mailbox):
    sent(mailbox, sent_copy_status=SentCopyStatus.APPENDING, sent_copy_claimed_at=timezone.now())
    assert outbound_copies_reset_stale(mailbox_id=mailbox.pk) == 0
    assert outbound_copies_due(mailbox_id=mailbox.pk, sent_before=None) == []


def test_a_missing_sent_folder_is_created_on_trycreate(mailbox, imap_account):
    mailbox.imap_sent_folder = "Sent Items"
    mailbox.save()
    assert "Sent Items" not in imap_account.folders()
    result = outbound_copy_to_sent(outbound_id=sent(mailbox).pk)
    assert result.sent_copy_status == SentCopyStatus.DONE
    assert "Sent Items" in imap_account.folders()
    assert len(imap_account.messages("Sent Items")) == 1


def test_an_empty_sent_folder_setting_means_no_copy(mailbox, imap_account):
    mailbox.imap_sent_folder = ""
    mailbox.save()
    result = outbound_copy_to_sent(outbound_id=sent(mailbox).pk)
    assert (result.sent_copy_status, result.sent_copy_error) == (SentCopyStatus.NOT_WANTED, "")
    assert "Sent" not in imap_account.folders()


@pytest.mark.parametrize("status", [OutboundStatus.PENDING, OutboundStatus.FAILED, OutboundStatus.UNCERTAIN])
def test_only_a_sent_message_is_copied(mailbox, imap_account, status):
    outbound = outbound_message(mailbox=mailbox, status=status)
    result = outbound_copy_to_sent(outbound_id=outbound.pk)
    assert (result.sent_copy_status, result.sent_copy_attempts) == (SentCopyStatus.PENDING, 0)
    assert "Sent" not in imap_account.folders()


def test_an_undecryptable_imap_secret_fails_the_copy_never_the_send(mailbox, imap_account):
    outbound = sent(mailbox)
    foreign = Fernet(Fernet.generate_key()).encrypt(b"secret").decode()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE mailboxes_mailbox SET imap_password = %s WHERE id = %s",
            [CIPHERTEXT_PREFIX + foreign, mailbox.pk],
        )
    result = outbound_copy_to_sent(outbound_id=outbound.pk)
    assert result.sent_copy_status == SentCopyStatus.FAILED
    assert result.sent_copy_error.startswith(
        "IMAP password of the mailbox unusable: IMAP password can't be decrypted"
    )
    result.refresh_from_db()
    assert (result.status, result.sent_copy_status) == (OutboundStatus.SENT, SentCopyStatus.FAILED)


def test_a_refused_login_fails_the_copy_permanently(mailbox, imap_account):
    mailbox.imap_password = "wrong"
    mailbox.save()
    result = outbound_copy_to_sent(outbound_id=sent(mailbox).pk)
    assert result.sent_copy_status == SentCopyStatus.FAILED
    assert "IMAP login failed" in result.sent_copy_error
    assert "wrong" not in result.sent_copy_error


def test_an_unreachable_server_leaves_the_copy_pending_with_backoff_then_fails_after_the_bound(mailbox):
    mailbox.imap_port = 1  # nothing listens there: connection refused, transient
    mailbox.save()
    outbound = sent(mailbox)
    result = outbound_copy_to_sent(outbound_id=outbound.pk)
    assert result.sent_copy_status == SentCopyStatus.PENDING
    assert "refused" in result.sent_copy_error
    assert result.sent_copy_next_attempt_at > timezone.now()
    assert outbound_copies_due(mailbox_id=mailbox.pk, sent_before=None) == []  # backoff not over
    assert outbound_copy_to_sent(outbound_id=outbound.pk).sent_copy_attempts == 1  # not claimed
    result.sent_copy_attempts = MAX_SENT_COPY_ATTEMPTS - 1
    result.sent_copy_next_attempt_at = timezone.now() - timedelta(seconds=1)
    result.save()
    assert outbound_copies_due(mailbox_id=mailbox.pk, sent_before=None) == [outbound.pk]
    last = outbound_copy_to_sent(outbound_id=outbound.pk)
    assert (last.sent_copy_status, last.sent_copy_attempts) == (SentCopyStatus.FAILED, MAX_SENT_COPY_ATTEMPTS)


def test_a_sent_folder_equal_to_the_polled_folder_is_not_ingested_again(mailbox, imap_account):
    mailbox.imap_sent_folder = "INBOX"
    mailbox.save()
    assert mailbox_poll(mailbox_id=mailbox.pk).error == ""
    outbound = sent(mailbox)
    assert outbound_copy_to_sent(outbound_id=outbound.pk).sent_copy_status == SentCopyStatus.DONE
    assert len(imap_account.messages("INBOX")) == 1
    result = mailbox_poll(mailbox_id=mailbox.pk)
    assert (result.error, result.new_email_ids, result.duplicate_count) == ("", [], 1)
    assert list(Email.objects.values_list("pk", "direction")) == [
        (outbound.email_id, EmailDirection.OUTGOING)
    ]
    mailbox.refresh_from_db()
    assert mailbox.imap_last_uid == max(imap_account.messages("INBOX"))  # the cursor moved on


# -- the gateway alone --------------------------------------------------------------------------


def message(message_id: str, *, body: str = "hello") -> bytes:
    return f"From: a@example.com\r\nMessage-ID: {message_id}\r\nSubject: s\r\n\r\n{body}\r\n".encode()


def test_find_message_id_matches_the_whole_id_not_a_substring(mailbox, imap_account):
    imap_account.create_folder("Sent")
    exact = imap_account.append(message("<abc@acme.example>"), folder="Sent")
    imap_account.append(message("<xabc@acme.example.org>"), folder="Sent")
    folded = imap_account.append(message("\r\n <abc@acme.example>"), folder="Sent")
    with imap_session(mailbox.imap_settings()) as conn:
        assert conn.find_message_id("Sent", "<abc@acme.example>") == [exact, folded]
        assert conn.find_message_id("Sent", "abc@acme.example") == [exact, folded]
        assert conn.find_message_id("Sent", "<nothing@acme.example>") == []
        assert conn.find_message_id("No such folder", "<abc@acme.example>") == []


HOSTILE_IDS = [
    '<a"b\\c@acme.example>',
    "<a)OR(ALL@acme.example>",
    "<a{5}@x>",
    "<a*%@x>",
    "<ü-é@acme.example>",
]


@pytest.mark.parametrize("hostile", HOSTILE_IDS)
def test_find_message_id_sends_the_id_as_data(mailbox, imap_account, hostile):
    imap_account.create_folder("Sent")
    imap_account.append(message("<other@acme.example>"), folder="Sent")
    target = imap_account.append(message(hostile), folder="Sent")
    with imap_session(mailbox.imap_settings()) as conn:
        assert conn.find_message_id("Sent", hostile) == [target]


@pytest.mark.parametrize("broken", ["<a\0b@x>", "<a\x07b@x>", "<a\x7fb@x>", "", "<>", " < > "])
def test_find_message_id_refuses_an_id_no_command_can_carry(mailbox, imap_account, broken):
    with imap_session(mailbox.imap_settings()) as conn, pytest.raises(ImapError) as caught:
        conn.find_message_id("INBOX", broken)
    assert caught.value.permanent


def test_append_returns_the_appenduid_of_uidplus(mailbox, imap_account):
    imap_account.create_folder("Sent")
    with imap_session(mailbox.imap_settings()) as conn:
        uid = conn.append_message("Sent", message("<u@x>"), flags=(b"\\Seen",), when=None)
    assert uid is not None
    assert list(imap_account.messages("Sent")) == [uid]
