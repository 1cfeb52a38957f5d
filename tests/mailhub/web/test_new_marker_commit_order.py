"""The "new" marker survives ids committing out of order (PostgreSQL takes ids at insert time)."""

import threading

import pytest
from django.db import connection, connections, transaction
from django.test import Client

from mailhub.web.emails.view_selector import email_view_for_user
from tests.factories import EmailFactory, MailboxFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_email_committed_after_a_higher_id_of_another_mailbox_stays_new():
    if connection.vendor != "postgresql":
        # SQLite has one writer at a time: ids can't commit out of order there (CI's PostgreSQL
        # run covers this).
        pytest.skip("out-of-order commits need concurrent writers (PostgreSQL)")
    user = UserFactory()
    slow_box, other_box = MailboxFactory(), MailboxFactory()
    slow_box.authorized_users.add(user)
    client = Client()
    client.force_login(user)
    client.get("/emails/")  # first visit
    started, finish = threading.Event(), threading.Event()

    def slow_batch() -> None:  # a poll of slow_box: its email id is taken now, committed later
        try:
            with transaction.atomic():
                EmailFactory(mailbox=slow_box, subject="late commit")
                started.set()
                finish.wait(10)
        finally:
            connections.close_all()

    thread = threading.Thread(target=slow_batch)
    thread.start()
    assert started.wait(10)
    EmailFactory(mailbox=other_box)  # another mailbox's poll commits a higher id meanwhile
    client.get("/emails/")  # the reader looks while slow_box's batch is still open
    finish.set()
    thread.join(10)
    assert email_view_for_user(user=user).total_new == 1
