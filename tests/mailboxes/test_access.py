"""The grant rule, written once in mailboxes/access.py, read the same from both sides."""

import pytest
from django.contrib.auth.models import AnonymousUser, User

from mailboxes.access import Reach, mailbox_reach, users_granted_q
from mailboxes.admin_access import scoped_to_user
from mailboxes.models import Email, Mailbox
from tests.factories import EmailFactory, GroupFactory, MailboxFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def people():
    role = GroupFactory()
    direct_box, group_box, _nobodys = (MailboxFactory(label=label) for label in ("Direct", "Group", "None"))
    for mailbox in Mailbox.objects.all():
        EmailFactory(mailbox=mailbox)
    users = {
        "superuser": UserFactory(is_superuser=True),
        "inactive_superuser": UserFactory(is_superuser=True, is_active=False),
        "direct": UserFactory(),
        "group": UserFactory(groups=[role]),
        "both": UserFactory(groups=[role]),
        "inactive": UserFactory(is_active=False, groups=[role]),
        "none": UserFactory(),
    }
    direct_box.authorized_users.add(users["direct"], users["both"], users["inactive"])
    group_box.authorized_users.add(users["both"])
    group_box.authorized_groups.add(role)
    return users


def test_every_user_and_mailbox_agree_from_both_sides(people):
    for who, user in people.items():
        for mailbox in Mailbox.objects.all():
            seen = Mailbox.objects.accessible_to(user).filter(pk=mailbox.pk).exists()
            granted = User.objects.filter(users_granted_q(mailbox)).filter(pk=user.pk).exists()
            scoped = scoped_to_user(Email.objects.filter(mailbox=mailbox), user).exists()
            assert seen == granted == scoped, (who, mailbox.label)


def test_the_users_granted_a_mailbox(people):
    names = {user.pk: who for who, user in people.items()}
    granted = {
        mailbox.label: sorted(
            {names[pk] for pk in User.objects.filter(users_granted_q(mailbox)).values_list("pk", flat=True)}
        )
        for mailbox in Mailbox.objects.all()
    }
    assert granted == {
        "Direct": ["both", "direct", "superuser"],
        "Group": ["both", "group", "superuser"],
        "None": ["superuser"],
    }


def test_reach(people):
    assert {who: mailbox_reach(user) for who, user in people.items()} == {
        "superuser": Reach.EVERYTHING,
        "inactive_superuser": Reach.NOTHING,
        "direct": Reach.GRANTED,
        "group": Reach.GRANTED,
        "both": Reach.GRANTED,
        "inactive": Reach.NOTHING,
        "none": Reach.GRANTED,
    }
    assert mailbox_reach(AnonymousUser()) is Reach.NOTHING
    assert mailbox_reach(None) is Reach.NOTHING
