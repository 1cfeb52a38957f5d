import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import IntegrityError, connection, transaction

from mailboxes.encryption import CIPHERTEXT_PREFIX, decrypt_secret
from mailboxes.models import Mailbox
from processing.models import FIRST_CASE_NUMBER
from tests.factories import CaseFactory, EmailFactory, GroupFactory, MailboxFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_email_unique_per_mailbox_uidvalidity_uid():
    email = EmailFactory(uidvalidity=7, uid=42)
    EmailFactory(mailbox=email.mailbox, uidvalidity=8, uid=42)  # other UIDVALIDITY: another message
    EmailFactory(uidvalidity=7, uid=42)  # other mailbox
    with pytest.raises(IntegrityError), transaction.atomic():
        EmailFactory(mailbox=email.mailbox, uidvalidity=7, uid=42)


def test_mailbox_label_is_unique():
    MailboxFactory(label="Support")
    with pytest.raises(IntegrityError), transaction.atomic():
        MailboxFactory(label="Support")


@pytest.fixture
def access_matrix():
    role = GroupFactory(name="support-team")
    direct_box = MailboxFactory(label="Direct")
    group_box = MailboxFactory(label="Via group")
    MailboxFactory(label="Nobody's")
    direct_user = UserFactory()
    direct_box.authorized_users.add(direct_user)
    group_user = UserFactory(groups=[role])
    group_box.authorized_groups.add(role)
    both_user = UserFactory(groups=[role])
    direct_box.authorized_users.add(both_user)
    group_box.authorized_users.add(both_user)  # granted twice: still listed once
    return {
        "superuser": UserFactory(is_superuser=True, is_staff=True),
        "direct": direct_user,
        "group": group_user,
        "both": both_user,
        "none": UserFactory(),
        "inactive": UserFactory(is_active=False, groups=[role]),
        "inactive_superuser": UserFactory(is_superuser=True, is_active=False),
    }


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("superuser", ["Direct", "Nobody's", "Via group"]),
        ("direct", ["Direct"]),
        ("group", ["Via group"]),
        ("both", ["Direct", "Via group"]),
        ("none", []),
        ("inactive", []),
        ("inactive_superuser", []),
    ],
)
def test_accessible_to_matrix(access_matrix, who, expected):
    user = access_matrix[who]
    labels = list(Mailbox.objects.accessible_to(user).values_list("label", flat=True))
    assert labels == expected


def test_accessible_to_anonymous_and_none(access_matrix):
    assert list(Mailbox.objects.accessible_to(AnonymousUser())) == []
    assert list(Mailbox.objects.accessible_to(None)) == []


def test_group_grant_revoked_when_user_leaves_group(access_matrix):
    user = access_matrix["group"]
    user.groups.clear()
    assert list(Mailbox.objects.accessible_to(user)) == []


def test_secrets_are_ciphertext_in_the_database_row():
    mailbox = MailboxFactory(imap_password="imap-pass-123", smtp_password="smtp-pass-456")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT imap_password, smtp_password FROM mailboxes_mailbox WHERE id = %s", [mailbox.pk]
        )
        raw_imap, raw_smtp = cursor.fetchone()
    for raw, plain in ((raw_imap, "imap-pass-123"), (raw_smtp, "smtp-pass-456")):
        assert raw.startswith(CIPHERTEXT_PREFIX)
        assert plain not in raw
        assert decrypt_secret(raw) == plain
    reloaded = Mailbox.objects.get(pk=mailbox.pk)
    assert (reloaded.imap_password.reveal(), reloaded.smtp_password.reveal()) == (
        "imap-pass-123",
        "smtp-pass-456",
    )


def test_same_secret_encrypts_differently_each_time():
    first = MailboxFactory(imap_password="same")
    second = MailboxFactory(imap_password="same")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT imap_password FROM mailboxes_mailbox WHERE id IN (%s, %s)", [first.pk, second.pk]
        )
        values = {row[0] for row in cursor.fetchall()}
    assert len(values) == 2


def test_case_numbers_are_human_friendly_and_unique():
    first, second = CaseFactory(), CaseFactory()
    assert (first.number, second.number) == (FIRST_CASE_NUMBER, FIRST_CASE_NUMBER + 1)
    assert first.reference == f"#{FIRST_CASE_NUMBER}"
    with pytest.raises(IntegrityError), transaction.atomic():
        CaseFactory(number=first.number)
