"""What an auto-reply becomes when the SMTP transaction ends badly: retried only when no copy can
have been accepted; an unknown outcome (after the final dot) is never retried automatically."""

import socket
import threading
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth.models import Permission
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from autoresponse.models import AutoReply, AutoReplyStatus
from autoresponse.selectors import auto_replies_due
from autoresponse.services import auto_replies_mark_stale_sending, auto_reply_send
from mailboxes.encryption import CIPHERTEXT_PREFIX
from mailhub.tasks import send_auto_reply
from tests.factories import AutoReplyFactory, EmailFactory, MailboxFactory, UserFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

MESSAGE = "From: support@acme.example\r\nTo: ann@customer.example\r\nSubject: Re\r\n\r\n.hi\r\n"


class StallingSmtpServer:
    """A minimal SMTP server on 127.0.0.1 that stalls at one stage, forever.

    stall="final": accepts MAIL, RCPT, DATA and the whole message, then never answers the final
    dot (the ambiguous case). stall="data": never answers the DATA command. stall=None: answers
    "250" to the final dot after `final_delay` seconds. `messages` counts complete messages
    (the final dot seen), i.e. copies the server could have accepted.
    """

    def __init__(self, stall: str | None, final_delay: float = 0.0):
        self.stall, self.final_delay = stall, final_delay
        self.messages: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self._listener.getsockname()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn):
        with conn:
            reader = conn.makefile("rb")
            conn.sendall(b"220 stall.test ESMTP\r\n")
            for line in reader:
                command = line.strip().upper()
                if command.startswith(b"EHLO") or command.startswith(b"HELO"):
                    conn.sendall(b"250 stall.test\r\n")
                elif command.startswith(b"MAIL") or command.startswith(b"RCPT") or command == b"RSET":
                    conn.sendall(b"250 ok\r\n")
                elif command == b"DATA":
                    if self.stall == "data":
                        self._closed.wait()
                        return
                    conn.sendall(b"354 go ahead\r\n")
                    body = []
                    for data_line in reader:
                        if data_line == b".\r\n":
                            break
                        body.append(data_line)
                    self.messages.append(b"".join(body))
                    if self.stall == "final":
                        self._closed.wait()
                        return
                    self._closed.wait(self.final_delay)
                    conn.sendall(b"250 queued\r\n")
                elif command == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"502 no\r\n")

    def close(self):
        self._closed.set()
        self._listener.close()


@pytest.fixture
def short_timeouts(settings):
    settings.MAILHUB_NETWORK_TIMEOUT = 0.5
    settings.MAILHUB_SMTP_DATA_TIMEOUT = 1.0
    return settings


def stalling(request, stall, **kwargs):
    server = StallingSmtpServer(stall, **kwargs)
    request.addfinalizer(server.close)
    return server


def pending_reply(server) -> AutoReply:
    mailbox = MailboxFactory(
        email="support@acme.example", smtp_host=server.host, smtp_port=server.port, smtp_security="none"
    )
    return AutoReplyFactory(
        email=EmailFactory(mailbox=mailbox),
        rule__mailbox=mailbox,
        status=AutoReplyStatus.PENDING,
        reason="",
        recipient="ann@customer.example",
        rendered_message=MESSAGE,
    )


def test_no_reply_to_the_final_dot_is_uncertain_and_never_sent_again(request, short_timeouts):
    server = stalling(request, "final")
    reply = pending_reply(server)
    send_auto_reply.apply(args=[reply.pk]).get()  # the task does not retry (a retry would raise)
    reply.refresh_from_db()
    assert reply.status == AutoReplyStatus.UNCERTAIN
    assert "may or may not have accepted" in reply.reason
    assert (reply.attempts, reply.next_attempt_at) == (1, None)
    assert auto_reply_send(auto_reply_id=reply.pk).status == AutoReplyStatus.UNCERTAIN
    assert auto_replies_due(mailbox_id=reply.email.mailbox_id) == []
    reply.refresh_from_db()
    assert reply.attempts == 1
    assert len(server.messages) == 1  # exactly one copy reached the server


def test_the_message_reaches_the_server_dot_stuffed_once(request, short_timeouts):
    server = stalling(request, "final")
    auto_reply_send(auto_reply_id=pending_reply(server).pk)
    assert server.messages == [MESSAGE.replace("\r\n.hi", "\r\n..hi").encode()]


def test_a_stall_before_the_final_dot_is_transient_and_retried_later(request, short_timeouts):
    server = stalling(request, "data")
    reply = auto_reply_send(auto_reply_id=pending_reply(server).pk)
    assert reply.status == AutoReplyStatus.PENDING
    assert reply.next_attempt_at > timezone.now()
    assert "timed out" in reply.reason
    assert server.messages == []


def test_the_final_reply_is_awaited_longer_than_a_command(request, short_timeouts):
    # 0.8 s is beyond the 0.5 s command timeout but within the 1 s data-termination timeout.
    server = stalling(request, None, final_delay=0.8)
    reply = auto_reply_send(auto_reply_id=pending_reply(server).pk)
    assert (reply.status, reply.reason) == (AutoReplyStatus.SENT, "")
    assert len(server.messages) == 1


def test_data_timeout_defaults_to_ten_minutes():
    from django.conf import settings

    assert settings.MAILHUB_SMTP_DATA_TIMEOUT == 600.0
    assert MailboxFactory().smtp_settings().data_timeout == 600.0


def test_undecryptable_smtp_password_fails_only_that_mailbox(request, short_timeouts, smtp_server):
    broken_server = stalling(request, None)
    broken = pending_reply(broken_server)
    # Encrypted with a key that is no longer configured (raw SQL: the field would encrypt again).
    old_key_ciphertext = CIPHERTEXT_PREFIX + Fernet(Fernet.generate_key()).encrypt(b"pw").decode()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE mailboxes_mailbox SET smtp_password = %s WHERE id = %s",
            [old_key_ciphertext, broken.email.mailbox_id],
        )
    healthy_mailbox = MailboxFactory(
        email="sales@acme.example",
        smtp_host=smtp_server.host,
        smtp_port=smtp_server.port,
        smtp_security="none",
    )
    healthy = AutoReplyFactory(
        email=EmailFactory(mailbox=healthy_mailbox),
        rule__mailbox=healthy_mailbox,
        status=AutoReplyStatus.PENDING,
        reason="",
        recipient="bob@customer.example",
        rendered_message=MESSAGE,
    )
    broken = auto_reply_send(auto_reply_id=broken.pk)
    assert broken.status == AutoReplyStatus.FAILED
    assert broken.reason.startswith("SMTP password of the mailbox unusable: ")
    assert "MAILHUB_ENCRYPTION_KEYS" in broken.reason
    assert AutoReply.objects.get(pk=broken.pk).status == AutoReplyStatus.FAILED  # not left 'sending'
    assert broken_server.messages == []
    assert auto_reply_send(auto_reply_id=healthy.pk).status == AutoReplyStatus.SENT
    assert len(smtp_server.wait_for(1)) == 1


# --------------------------------------------------------------------------- resend by hand


def staff_with(*codenames):
    user = UserFactory(is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


def resend(client, reply):
    return client.post(
        reverse("admin:autoresponse_autoreply_changelist"),
        {"action": "resend_by_hand", "_selected_action": [reply.pk]},
    )


def test_resend_by_hand_moves_an_uncertain_reply_back_to_pending(client, django_capture_on_commit_callbacks):
    reply = AutoReplyFactory(status=AutoReplyStatus.UNCERTAIN, reason="no answer", rendered_message=MESSAGE)
    client.force_login(UserFactory(username="boss", is_staff=True, is_superuser=True))
    with django_capture_on_commit_callbacks() as callbacks:
        assert resend(client, reply).status_code == 302
    reply.refresh_from_db()
    assert (reply.status, reply.attempts, reply.next_attempt_at) == (AutoReplyStatus.PENDING, 0, None)
    assert reply.reason == "resend requested by hand by boss; before: no answer"
    assert len(callbacks) == 1


def test_resend_by_hand_needs_the_change_permission(client):
    reply = AutoReplyFactory(status=AutoReplyStatus.UNCERTAIN, rendered_message=MESSAGE)
    client.force_login(staff_with("view_autoreply"))
    resend(client, reply)
    reply.refresh_from_db()
    assert reply.status == AutoReplyStatus.UNCERTAIN


@pytest.mark.parametrize(
    "status", [AutoReplyStatus.SENT, AutoReplyStatus.SUPPRESSED, AutoReplyStatus.SENDING]
)
def test_resend_by_hand_leaves_other_states_alone(client, status):
    reply = AutoReplyFactory(status=status, rendered_message=MESSAGE)
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    resend(client, reply)
    reply.refresh_from_db()
    assert reply.status == status


def test_stale_sending_older_than_the_cutoff_only(request, short_timeouts):
    reply = pending_reply(stalling(request, None))
    AutoReply.objects.filter(pk=reply.pk).update(
        status=AutoReplyStatus.SENDING, claimed_at=timezone.now() - timedelta(minutes=5)
    )
    auto_replies_mark_stale_sending(mailbox_id=reply.email.mailbox_id)
    reply.refresh_from_db()
    assert reply.status == AutoReplyStatus.SENDING
