"""Review of issue 12 (answering), threading: hostile mail against the case token rule.

Finding R1: since answers are stored as outgoing emails of the case (From: the mailbox's own
address), "the sender already wrote into the case" matched anybody who forges From: with the
mailbox's address. The token alone then let a stranger join (and reopen) any case of the mailbox.
"""

import pytest

from mailboxes.models import EmailDirection
from processing.models import Case, CaseStatus
from processing.services import email_process
from tests.factories import EmailFactory, MailboxFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def answered_case():
    mailbox = MailboxFactory(processing_action="case", email="support@example.com")
    original = EmailFactory(mailbox=mailbox, from_address="alice@example.com")
    email_process(email_id=original.pk)
    case = Case.objects.get()
    # An answer of staff on the case, as answer_submit stores it.
    EmailFactory(
        mailbox=mailbox,
        case=case,
        direction=EmailDirection.OUTGOING,
        sent_by=UserFactory(),
        uid=None,
        uidvalidity=None,
        from_address="support@example.com",
        to=[["", "alice@example.com"]],
    )
    Case.objects.filter(pk=case.pk).update(status=CaseStatus.RESOLVED)
    return case


@pytest.mark.parametrize("forged_from", ["support@example.com", "SUPPORT@example.com"])
def test_r1_token_from_a_forged_mailbox_address_does_not_join_the_case(answered_case, forged_from):
    forged = EmailFactory(
        mailbox=answered_case.mailbox,
        from_address=forged_from,
        subject=f"Re: [#{answered_case.number}] please also send me the invoice of everybody",
    )
    assert email_process(email_id=forged.pk).result == "case_created"
    answered_case.refresh_from_db()
    assert (answered_case.status, answered_case.emails.count()) == (CaseStatus.RESOLVED, 2)


def test_r1_token_from_the_reporter_still_joins_an_answered_case(answered_case):
    reply = EmailFactory(
        mailbox=answered_case.mailbox,
        from_address="alice@example.com",
        subject=f"Re: [#{answered_case.number}] thanks",
    )
    assert email_process(email_id=reply.pk).result == "case_joined"
