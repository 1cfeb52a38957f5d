"""The pipeline of staff's answers with the real servers: send, then the copy in the Sent folder,
inline (poll_mailboxes) and queued (the Celery tasks, eager in tests); the poll finishes copies
whose task was lost and never ingests the copy again."""

from datetime import timedelta

import pytest
from django.utils import timezone

from mailboxes.models import Email, OutboundMessage, OutboundStatus, SentCopyStatus
from mailboxes.services import mailbox_poll
from mailhub import tasks
from mailhub.pipeline import mailbox_poll_inline, outbound_send_step
from tests.factories import MailboxFactory, outbound_message

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.fixture
def mailbox(imap_account, smtp_server):
    box = MailboxFactory.on_dovecot(
        imap_account,
        email="support@acme.example",
        history_import="none",
        smtp_host=smtp_server.host,
        smtp_port=smtp_server.port,
    )
    assert mailbox_poll(mailbox_id=box.pk).error == ""
    box.refresh_from_db()
    return box


class Recording:
    def __init__(self):
        self.copies = []

    def copy_to_sent(self, outbound_id):
        self.copies.append(outbound_id)


@pytest.mark.parametrize(
    ("fail", "status", "copies"),
    [(None, OutboundStatus.SENT, 1), (550, OutboundStatus.FAILED, 0), (451, OutboundStatus.PENDING, 0)],
)
def test_only_a_sent_answer_dispatches_its_copy(mailbox, smtp_server, fail, status, copies):
    smtp_server.set_failure(fail, at="data")
    outbound = outbound_message(mailbox=mailbox)
    dispatch = Recording()
    assert outbound_send_step(outbound_id=outbound.pk, dispatch=dispatch) == status
    assert dispatch.copies == [outbound.pk] * copies


def test_the_queued_send_task_sends_once_and_copies_to_sent(mailbox, smtp_server, imap_account):
    outbound = outbound_message(mailbox=mailbox)
    tasks.send_outbound.delay(outbound.pk)
    tasks.send_outbound.delay(outbound.pk)  # a redelivered task
    outbound.refresh_from_db()
    assert (outbound.status, outbound.sent_copy_status) == (OutboundStatus.SENT, SentCopyStatus.DONE)
    assert len(smtp_server.messages) == 1
    assert len(imap_account.messages("Sent")) == 1
    assert tasks.copy_outbound_to_sent.name == "mailhub.copy_outbound_to_sent"


def test_the_inline_poll_sends_a_lost_answer_and_copies_it(mailbox, smtp_server, imap_account):
    outbound = outbound_message(mailbox=mailbox)
    assert mailbox_poll_inline(mailbox_id=mailbox.pk).error == ""
    outbound.refresh_from_db()
    assert (outbound.status, outbound.sent_copy_status) == (OutboundStatus.SENT, SentCopyStatus.DONE)
    assert len(smtp_server.messages) == 1
    assert list(imap_account.flags("Sent").values()) == [(b"\\Seen",)]


def test_the_poll_dispatches_a_copy_whose_backoff_is_over_and_a_stale_appending_one(mailbox, imap_account):
    now = timezone.now()
    due = outbound_message(
        mailbox=mailbox,
        status=OutboundStatus.SENT,
        sent_at=now,
        sent_copy_next_attempt_at=now - timedelta(seconds=1),
    )
    waiting = outbound_message(
        mailbox=mailbox,
        status=OutboundStatus.SENT,
        sent_at=now,
        sent_copy_next_attempt_at=now + timedelta(hours=1),
    )
    stale = outbound_message(
        mailbox=mailbox,
        status=OutboundStatus.SENT,
        sent_at=now - timedelta(hours=3),
        sent_copy_status=SentCopyStatus.APPENDING,
        sent_copy_claimed_at=now - timedelta(hours=2),
    )
    tasks.poll_mailbox.delay(mailbox.pk)
    copies = dict(OutboundMessage.objects.values_list("pk", "sent_copy_status"))
    assert copies == {
        due.pk: SentCopyStatus.DONE,
        waiting.pk: SentCopyStatus.PENDING,
        stale.pk: SentCopyStatus.DONE,
    }
    assert len(imap_account.messages("Sent")) == 2


def test_a_sent_folder_equal_to_inbox_is_not_ingested_by_the_next_poll(mailbox, smtp_server, imap_account):
    mailbox.imap_sent_folder = "INBOX"
    mailbox.save(update_fields=["imap_sent_folder"])
    outbound = outbound_message(mailbox=mailbox)
    tasks.send_outbound.delay(outbound.pk)
    assert len(imap_account.messages("INBOX")) == 1
    result = mailbox_poll_inline(mailbox_id=mailbox.pk)
    assert (result.error, result.new_email_ids, result.duplicate_count, result.processed_count) == (
        "",
        [],
        1,
        0,
    )
    assert list(Email.objects.values_list("pk", flat=True)) == [outbound.email_id]
