"""Review of issue 12 (answering) on the staff pages: hostile users and races, each test named
after its finding (R<n>) in the review report."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client
from django.urls import reverse

from mailboxes.models import EmailDirection, OutboundMessage, OutboundStatus
from mailhub.web.answers import views as answer_views
from tests.factories import EmailFactory, MailboxFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent_and_answer():
    mailbox = MailboxFactory(email="support@acme.example", smtp_host="")
    agent = UserFactory()
    mailbox.authorized_users.add(agent)
    email = EmailFactory(
        mailbox=mailbox,
        direction=EmailDirection.OUTGOING,
        sent_by=agent,
        uid=None,
        uidvalidity=None,
        from_address="support@acme.example",
    )
    outbound = OutboundMessage.objects.create(
        email=email,
        submission_key=uuid.uuid4().hex,
        sent_by=agent,
        envelope_recipients=["ann@customer.example"],
        status=OutboundStatus.FAILED,
        reason="554 refused",
    )
    client = Client()
    client.force_login(agent)
    return client, outbound


def test_r2_send_again_never_moves_an_answer_that_became_uncertain_without_the_box_ticked(
    agent_and_answer, monkeypatch, django_capture_on_commit_callbacks
):
    """The page read 'failed' (no box needed); before its UPDATE, a second click sent it again and
    that send ended with an unknown outcome (`uncertain`). The UPDATE must not move it: the
    customer may have it, and a third copy needs a person's informed choice."""
    client, outbound = agent_and_answer

    class RacingForm(answer_views.SendAgainForm):
        def is_valid(self) -> bool:
            OutboundMessage.objects.filter(pk=outbound.pk).update(status=OutboundStatus.UNCERTAIN)
            return super().is_valid()

    monkeypatch.setattr(answer_views, "SendAgainForm", RacingForm)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        client.post(reverse("answers:send_again", args=[outbound.email.pk]))
    outbound.refresh_from_db()
    assert (outbound.status, len(callbacks)) == (OutboundStatus.UNCERTAIN, 0)


def test_r4_a_draft_is_kept_per_user_and_forgotten_at_logout():
    """The draft of an answer lives in the browser's localStorage. Keyed only by email and mode, it
    was offered to the next person who opened the same answer on a shared computer, and it stayed
    there after logging out."""
    mailbox = MailboxFactory()
    email = EmailFactory(mailbox=mailbox)
    keys = []
    for user in (UserFactory(), UserFactory()):
        mailbox.authorized_users.add(user)
        client = Client()
        client.force_login(user)
        page = client.get(reverse("answers:reply", args=[email.pk])).content.decode()
        keys.append(page.split('data-draft-key="', 1)[1].split('"', 1)[0])
    assert keys[0] != keys[1]
    logged_out = Client().get(reverse("login")).content.decode()
    assert "localStorage.removeItem" in logged_out
    assert '"mailhub-draft-"' in logged_out


def test_r5_an_upload_over_the_limit_is_refused_before_it_is_read(settings, monkeypatch):
    """The size limit was checked by the service, after Django had received every byte of the
    request (spooled to a temporary file on disk): one agent could fill the disk with one POST."""
    from django.core.files import uploadhandler
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.MAILHUB_ANSWER_MAX_BYTES = 1024
    mailbox = MailboxFactory()
    email = EmailFactory(mailbox=mailbox)
    user = UserFactory()
    mailbox.authorized_users.add(user)
    client = Client()
    client.force_login(user)
    received = []
    for handler in (uploadhandler.MemoryFileUploadHandler, uploadhandler.TemporaryFileUploadHandler):
        original = handler.receive_data_chunk
        monkeypatch.setattr(
            handler,
            "receive_data_chunk",
            lambda self, data, start, original=original: (
                received.append(len(data)) or original(self, data, start)
            ),
        )
    big = SimpleUploadedFile("big.bin", b"x" * (4 * 1024 * 1024), content_type="application/octet-stream")
    response = client.post(
        reverse("answers:reply", args=[email.pk]),
        {"submission_key": uuid.uuid4().hex, "to": "ann@customer.example", "send": "1", "uploads": big},
    )
    assert (response.status_code, received) == (413, [])  # nothing of the file was received
    assert OutboundMessage.objects.count() == 0
