"""The answer service on its own (no page): one OutboundMessage per submission key, also when two
submits race (threads; on PostgreSQL through `python -m tests.postgres_run`), the per-user rate
limit counted under the user's lock, and what is refused."""

from __future__ import annotations

import threading

import pytest
from django.db import connections

from mailboxes.models import Email, EmailDirection, OutboundMessage, OutboundStatus
from processing.answer_drafts import AnswerMode
from processing.services.answers import AnswerRefused, answer_submit
from tests.factories import AttachmentFactory, CaseFactory, EmailFactory, MailboxFactory, UserFactory


@pytest.fixture
def original(db):
    mailbox = MailboxFactory(email="support@acme.example", imap_sent_folder="")
    case = CaseFactory(mailbox=mailbox, subject="Printer broken")
    return EmailFactory(
        mailbox=mailbox, case=case, subject="Printer broken", from_address="ann@customer.example"
    )


def submit(original, user, key="key-1", **changes):
    fields = {
        "email_id": original.pk,
        "user": user,
        "submission_key": key,
        "mode": AnswerMode.REPLY,
        "to": "ann@customer.example",
        "cc": "",
        "bcc": "",
        "subject": "Re: Printer broken",
        "body": "We fix it today.",
        "include_quote": True,
        "forward_attachment_ids": [],
        "uploads": [],
    }
    return answer_submit(**(fields | changes))


@pytest.mark.django_db
def test_the_same_key_twice_gives_the_first_outbound_message(original):
    agent = UserFactory()
    first = submit(original, agent)
    second = submit(original, agent, body="A second text")
    assert second.pk == first.pk
    assert OutboundMessage.objects.count() == 1
    assert Email.objects.filter(direction=EmailDirection.OUTGOING).count() == 1
    assert first.status == OutboundStatus.PENDING
    assert first.email.case_id == original.case_id


@pytest.mark.django_db(transaction=True)
def test_two_submits_racing_with_one_key_make_one_message(original):
    agent = UserFactory()
    barrier = threading.Barrier(2)
    results, errors = [], []

    def run():
        try:
            barrier.wait(5)
            results.append(submit(original, agent, key="racing").pk)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert len(set(results)) == 1
    assert OutboundMessage.objects.count() == 1
    assert Email.objects.filter(direction=EmailDirection.OUTGOING).count() == 1


@pytest.mark.django_db
def test_someone_else_reusing_a_key_is_refused(original):
    submit(original, UserFactory())
    with pytest.raises(AnswerRefused):
        submit(original, UserFactory())


@pytest.mark.django_db
def test_the_hourly_limit_counts_the_user_answers(original, settings):
    settings.MAILHUB_ANSWERS_PER_USER_PER_HOUR = 2
    agent = UserFactory()
    submit(original, agent, key="a")
    submit(original, agent, key="b")
    with pytest.raises(AnswerRefused):
        submit(original, agent, key="c")
    submit(original, UserFactory(), key="d")  # another agent has their own budget
    assert OutboundMessage.objects.count() == 3


@pytest.mark.django_db
def test_a_forward_of_another_emails_attachment_is_refused(original):
    stranger = AttachmentFactory(email=EmailFactory(mailbox=original.mailbox))
    with pytest.raises(AnswerRefused):
        submit(original, UserFactory(), mode=AnswerMode.FORWARD, forward_attachment_ids=[stranger.pk])
    assert OutboundMessage.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "changes",
    [
        {"to": "", "cc": "", "bcc": ""},
        {"to": "not an address"},
        {"to": ", ".join(f"r{n}@customer.example" for n in range(101))},
        {"body": "x" * 200_001},
        {"submission_key": ""},
        {"submission_key": "k" * 65},
    ],
    ids=["no recipient", "unusable address", "101 recipients", "text too long", "no key", "long key"],
)
def test_what_is_refused_stores_nothing(original, changes):
    with pytest.raises(AnswerRefused):
        submit(original, UserFactory(), **changes)
    assert OutboundMessage.objects.count() == 0
    assert Email.objects.filter(direction=EmailDirection.OUTGOING).count() == 0
