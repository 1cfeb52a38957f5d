"""My Emails' per-user rows: the visit watermarks and the chosen view are services."""

import pytest

from mailboxes.models import MailboxViewPreference, MailboxVisit
from mailboxes.services.visits import mailbox_view_choose, mailbox_visits_record
from tests.factories import MailboxFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_visits_record_inserts_then_updates_one_row_per_user_and_mailbox():
    user, other = UserFactory(), UserFactory()
    first, second = MailboxFactory(), MailboxFactory()
    mailbox_visits_record(user=user, seen_up_to={first.pk: 5, second.pk: 7})
    mailbox_visits_record(user=other, seen_up_to={first.pk: 1})
    mailbox_visits_record(user=user, seen_up_to={first.pk: 9})
    rows = MailboxVisit.objects.order_by("user_id", "mailbox_id")
    assert [(r.user_id, r.mailbox_id, r.seen_up_to_email_id) for r in rows] == [
        (user.pk, first.pk, 9),
        (user.pk, second.pk, 7),
        (other.pk, first.pk, 1),
    ]


def test_visits_record_of_nothing_writes_nothing():
    mailbox_visits_record(user=UserFactory(), seen_up_to={})
    assert MailboxVisit.objects.count() == 0


def test_view_choose_keeps_one_preference_per_user():
    user = UserFactory()
    mailbox = MailboxFactory()
    mailbox_view_choose(user=user, mailbox=mailbox)
    assert [(p.user_id, p.mailbox_id) for p in MailboxViewPreference.objects.all()] == [(user.pk, mailbox.pk)]
    mailbox_view_choose(user=user, mailbox=None)
    assert [(p.user_id, p.mailbox_id) for p in MailboxViewPreference.objects.all()] == [(user.pk, None)]
