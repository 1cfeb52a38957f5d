"""The admin of staff's answers: read-only, scoped to the user's mailboxes, with "Send again"
for those who may change them; the mailbox list counts the answers that need a person."""

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.urls import reverse

from mailboxes.models import OutboundMessage, OutboundStatus
from tests.factories import MailboxFactory, UserFactory, outbound_message

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:mailboxes_outboundmessage_changelist"


def staff_with(*codenames, mailbox=None):
    user = UserFactory(is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    if mailbox is not None:
        mailbox.authorized_users.add(user)
    return user


@pytest.fixture
def granted():
    return MailboxFactory(label="Granted")


@pytest.fixture
def other():
    return MailboxFactory(label="Other")


def send_again(client, *outbounds):
    response = client.post(
        reverse(CHANGELIST),
        {"action": "send_again", "_selected_action": [o.pk for o in outbounds]},
        follow=True,
    )
    assert response.status_code == 200
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_a_staff_user_sees_only_the_answers_of_their_mailboxes(client, granted, other):
    mine = outbound_message(mailbox=granted, subject="Re: mine")
    theirs = outbound_message(mailbox=other, subject="Re: theirs")
    client.force_login(staff_with("view_outboundmessage", mailbox=granted))
    page = client.get(reverse(CHANGELIST))
    assert page.status_code == 200
    assert list(page.context["cl"].result_list) == [mine]
    assert "Re: theirs" not in page.content.decode()
    assert client.get(reverse("admin:mailboxes_outboundmessage_change", args=[mine.pk])).status_code == 200
    response = client.get(reverse("admin:mailboxes_outboundmessage_change", args=[theirs.pk]))
    assert (response.status_code, response["Location"]) == (302, reverse("admin:index"))


def test_the_change_page_is_read_only_and_nothing_can_be_added_or_deleted(client, granted):
    outbound = outbound_message(mailbox=granted, status=OutboundStatus.FAILED, reason="550 no")
    client.force_login(
        staff_with(
            "view_outboundmessage",
            "change_outboundmessage",
            "add_outboundmessage",
            "delete_outboundmessage",
            mailbox=granted,
        )
    )
    url = reverse("admin:mailboxes_outboundmessage_change", args=[outbound.pk])
    client.post(url, {"status": OutboundStatus.SENT, "reason": ""})
    outbound.refresh_from_db()
    assert (outbound.status, outbound.reason) == (OutboundStatus.FAILED, "550 no")
    assert client.get(reverse("admin:mailboxes_outboundmessage_add")).status_code == 403
    assert (
        client.get(reverse("admin:mailboxes_outboundmessage_delete", args=[outbound.pk])).status_code == 403
    )


@pytest.mark.parametrize("status", [OutboundStatus.FAILED, OutboundStatus.UNCERTAIN])
def test_send_again_puts_it_back_to_pending_and_dispatches_the_send(
    client, granted, status, django_capture_on_commit_callbacks, monkeypatch
):
    sent = []
    monkeypatch.setattr("mailhub.admin.send_outbound.delay", sent.append)
    outbound = outbound_message(mailbox=granted, status=status, reason="no answer", attempts=3)
    boss = staff_with("view_outboundmessage", "change_outboundmessage", mailbox=granted)
    boss.username = "boss"
    boss.save()
    client.force_login(boss)
    with django_capture_on_commit_callbacks(execute=True):
        messages = send_again(client, outbound)
    assert messages == ["1 answer(s) queued to be sent again."]
    outbound.refresh_from_db()
    assert (outbound.status, outbound.attempts) == (OutboundStatus.PENDING, 0)
    assert outbound.reason == "sent again by boss; before: no answer"
    assert sent == [outbound.pk]


def test_send_again_needs_the_change_permission(client, granted, monkeypatch):
    sent = []
    monkeypatch.setattr("mailhub.admin.send_outbound.delay", sent.append)
    outbound = outbound_message(mailbox=granted, status=OutboundStatus.FAILED)
    client.force_login(staff_with("view_outboundmessage", mailbox=granted))
    assert send_again(client, outbound) == []
    outbound.refresh_from_db()
    assert (outbound.status, sent) == (OutboundStatus.FAILED, [])


@pytest.mark.parametrize("status", [OutboundStatus.SENT, OutboundStatus.PENDING, OutboundStatus.SENDING])
def test_send_again_leaves_other_states_alone(client, granted, status, monkeypatch):
    sent = []
    monkeypatch.setattr("mailhub.admin.send_outbound.delay", sent.append)
    outbound = outbound_message(mailbox=granted, status=status)
    client.force_login(staff_with("view_outboundmessage", "change_outboundmessage", mailbox=granted))
    assert send_again(client, outbound) == [
        "0 answer(s) queued to be sent again.",
        "1 skipped: only failed answers and those of unknown outcome can be sent again.",
    ]
    assert OutboundMessage.objects.get().status == status
    assert sent == []


def test_send_again_cannot_reach_another_mailboxs_answer(client, granted, other, monkeypatch):
    sent = []
    monkeypatch.setattr("mailhub.admin.send_outbound.delay", sent.append)
    theirs = outbound_message(mailbox=other, status=OutboundStatus.FAILED)
    client.force_login(staff_with("view_outboundmessage", "change_outboundmessage", mailbox=granted))
    send_again(client, theirs)
    theirs.refresh_from_db()
    assert (theirs.status, sent) == (OutboundStatus.FAILED, [])


def test_the_mailbox_list_counts_failed_and_uncertain_answers(client, granted):
    for status in (
        OutboundStatus.FAILED,
        OutboundStatus.UNCERTAIN,
        OutboundStatus.UNCERTAIN,
        OutboundStatus.SENT,
    ):
        outbound_message(mailbox=granted, status=status)
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    page = client.get(reverse("admin:mailboxes_mailbox_changelist"))
    (row,) = page.context["cl"].result_list
    assert (row.status_outbound_failed, row.status_outbound_uncertain) == (1, 2)
    content = page.content.decode().lower()
    assert "answers failed" in content
    assert "answers of unknown outcome" in content
