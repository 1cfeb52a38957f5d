"""Regressions found in review: races that only show with real concurrent transactions.

Both widen the race window with a sleep so that it is hit every run; on PostgreSQL (the CI's
second run) they exercise real row locks, on SQLite the IMMEDIATE transactions.
"""

import threading
import time

import pytest
from django.db import connections

import mailhub.tasks
from mailboxes.models import Email
from mailboxes.services import polling
from mailhub import pipeline
from processing.services import actions
from tests.factories import EmailFactory, MailboxFactory

pytestmark = pytest.mark.django_db(transaction=True)


def run_in_threads(*jobs: tuple[str, float, object]) -> dict:
    results: dict = {}

    def run(name: str, delay: float, job) -> None:
        time.sleep(delay)
        try:
            results[name] = job()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=job, name=job[0]) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_reply_and_its_original_processed_at_once_do_not_deadlock(monkeypatch):
    box = MailboxFactory(processing_action="case")
    original = EmailFactory(mailbox=box, message_id="<orig@x>")
    reply = EmailFactory(mailbox=box, message_id="<reply@x>", in_reply_to="<orig@x>")
    real = actions._unprocessed_emails_it_answers

    def slow(email):
        if email.pk == reply.pk:
            time.sleep(1.0)  # between locking the reply and reaching for the original
        return real(email)

    monkeypatch.setattr(actions, "_unprocessed_emails_it_answers", slow)
    results = run_in_threads(
        ("reply", 0, lambda: actions.email_process(email_id=reply.pk)),
        ("original", 0.3, lambda: actions.email_process(email_id=original.pk)),
    )
    assert results["reply"].result == "case_joined"
    assert results["original"].result == "already_done"
    assert set(Email.objects.values_list("processing_status", flat=True)) == {"done"}


def message(n: int) -> bytes:
    return (
        f"From: s{n}@example.com\r\nTo: support@example.com\r\nSubject: M{n}\r\n"
        f"Message-ID: <m{n}@example.com>\r\n\r\nbody {n}\r\n"
    ).encode()


@pytest.mark.integration
def test_emails_stored_before_a_lost_lease_are_still_handed_to_processing(
    imap_account, settings, monkeypatch
):
    settings.MAILHUB_POLL_LEASE_SECONDS = 1
    settings.MAILHUB_FETCH_BATCH_MESSAGES = 1
    box = MailboxFactory.on_dovecot(
        imap_account,
        history_import="none",
    )
    polling.mailbox_poll(mailbox_id=box.pk)  # first contact: empty folder
    for n in range(3):
        imap_account.append(message(n))
    enqueued: list[int] = []
    monkeypatch.setattr(
        mailhub.tasks.process_emails, "delay", lambda mailbox_id, email_ids: enqueued.extend(email_ids)
    )
    monkeypatch.setattr(mailhub.tasks.send_auto_reply, "delay", lambda pk: None)
    real_store = polling.email_store_fetched

    def slow_first_batch(**kwargs):
        outcome = real_store(**kwargs)
        if threading.current_thread().name == "A" and kwargs["uid"] == 1:
            time.sleep(1.6)  # longer than the lease: poller B takes over meanwhile
        return outcome

    monkeypatch.setattr(polling, "email_store_fetched", slow_first_batch)
    run_in_threads(
        (
            "A",
            0,
            lambda: pipeline.mailbox_poll_step(mailbox_id=box.pk, dispatch=mailhub.tasks.QueuedDispatch()),
        ),
        (
            "B",
            1.2,
            lambda: pipeline.mailbox_poll_step(mailbox_id=box.pk, dispatch=mailhub.tasks.QueuedDispatch()),
        ),
    )
    assert Email.objects.count() == 3
    assert sorted(enqueued) == sorted(Email.objects.values_list("pk", flat=True))
