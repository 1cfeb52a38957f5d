import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from mailboxes.models import ProcessingStatus
from processing.models import Case, Lead
from tests.factories import EmailFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(is_superuser=True, is_staff=True))
    return client


def run_action(client, action, emails):
    return client.post(
        reverse("admin:mailboxes_email_changelist"),
        {"action": action, "_selected_action": [email.pk for email in emails]},
        follow=True,
    )


def test_convert_selected_emails_to_cases_twice_is_a_no_op(admin_client):
    emails = [EmailFactory(is_history=True, processing_status=ProcessingStatus.SKIPPED) for _ in range(2)]
    run_action(admin_client, "convert_to_case", emails)
    response = run_action(admin_client, "convert_to_case", emails)
    assert Case.objects.count() == 2
    assert "2 email(s) are now in a case." in [str(m) for m in get_messages(response.wsgi_request)]


def test_convert_to_lead_refuses_an_email_already_in_a_case(admin_client):
    email = EmailFactory()
    run_action(admin_client, "convert_to_case", [email])
    response = run_action(admin_client, "convert_to_lead", [email])
    messages = [str(m) for m in get_messages(response.wsgi_request)]
    assert f"email {email.pk}: this email already belongs to a case" in messages
    assert Lead.objects.count() == 0


def test_retry_processing_resets_failed_emails(admin_client):
    failed = EmailFactory(processing_status=ProcessingStatus.FAILED, processing_attempts=5)
    done = EmailFactory(processing_status=ProcessingStatus.DONE)
    run_action(admin_client, "retry_processing", [failed, done])
    failed.refresh_from_db()
    done.refresh_from_db()
    assert (failed.processing_status, failed.processing_attempts) == (ProcessingStatus.PENDING, 0)
    assert done.processing_status == ProcessingStatus.DONE


def test_a_case_added_by_hand_gets_the_next_number(admin_client):
    from tests.factories import CaseFactory, MailboxFactory

    mailbox = MailboxFactory()
    existing = CaseFactory(mailbox=mailbox)
    response = admin_client.post(
        reverse("admin:processing_case_add"),
        {"subject": "By phone", "status": "open", "priority": "normal", "mailbox": mailbox.pk},
    )
    assert response.status_code == 302
    added = Case.objects.get(subject="By phone")
    assert added.number == existing.number + 1


# -- agent signatures -----------------------------------------------------------------------------


@pytest.fixture
def staff_with_signature_rights(db):
    from django.contrib.auth.models import Permission

    user = UserFactory(username="alex", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="processing", codename__endswith="agentsignature")
    )
    return user


def test_a_staff_user_sees_and_writes_only_their_own_signatures(client, staff_with_signature_rights):
    from processing.models import AgentSignature
    from tests.factories import MailboxFactory

    granted, other = MailboxFactory(label="Support"), MailboxFactory(label="Sales")
    granted.authorized_users.add(staff_with_signature_rights)
    colleague = UserFactory(username="gus")
    AgentSignature.objects.create(user=colleague, mailbox=None, text="Gus's secret sign-off")
    client.force_login(staff_with_signature_rights)

    listing = client.get(reverse("admin:processing_agentsignature_changelist")).content.decode()
    assert "gus" not in listing
    add_page = client.get(reverse("admin:processing_agentsignature_add")).content.decode()
    assert 'name="user"' not in add_page  # always the author's own
    assert "Support" in add_page
    assert "Sales" not in add_page  # a mailbox they can't access is not offered
    response = client.post(
        reverse("admin:processing_agentsignature_add"),
        {"user": colleague.pk, "mailbox": granted.pk, "text": "Alex, Support"},
    )
    assert response.status_code == 302
    mine = AgentSignature.objects.get(text="Alex, Support")
    assert (mine.user, mine.mailbox) == (staff_with_signature_rights, granted)
    refused = client.post(reverse("admin:processing_agentsignature_add"), {"mailbox": other.pk, "text": "x"})
    assert refused.status_code == 200  # the form refuses a mailbox outside their access
    assert not AgentSignature.objects.filter(mailbox=other).exists()


def test_the_mailbox_admin_page_offers_the_answer_settings(admin_client):
    from tests.factories import MailboxFactory

    mailbox = MailboxFactory()
    page = admin_client.get(reverse("admin:mailboxes_mailbox_change", args=[mailbox.pk])).content.decode()
    for field in ("sender_name", "signature", "imap_sent_folder"):
        assert f'name="{field}"' in page
