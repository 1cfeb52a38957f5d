"""IMAP ingestion against a real Dovecot: exactly once, nothing lost, flags untouched."""

import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connections
from django.utils import timezone

from mailboxes.models import Email, Mailbox, ProcessingStatus
from mailboxes.services import mailbox_poll, mailboxes_claim_due_polls
from tests.factories import MailboxFactory
from tests.servers.proxy import CuttingTcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def make_message(n: int, *, body: str = "", extra_headers: str = "", size_pad: int = 0) -> bytes:
    text = body or f"Hello, this is message number {n}.\r\n" + ("x" * 76 + "\r\n") * (size_pad // 78)
    return (
        f"From: Sender {n} <sender{n}@example.com>\r\n"
        f"To: support@example.com\r\n"
        f"Subject: Message {n}\r\n"
        f"Message-ID: <msg-{n}@example.com>\r\n"
        f"Date: Mon, 2 Nov 2026 10:{n % 60:02d}:00 +0000\r\n"
        f"{extra_headers}"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"{text}"
    ).encode()


@pytest.fixture
def mailbox(imap_account):
    return MailboxFactory.on_dovecot(
        imap_account,
        history_import="none",
    )


def first_poll_of_empty_folder(mailbox) -> None:
    result = mailbox_poll(mailbox_id=mailbox.pk)
    assert (result.error, result.new_email_ids, result.history_count) == ("", [], 0)


def test_n_messages_give_n_emails_then_zero_then_only_the_new_ones(mailbox, imap_account):
    first_poll_of_empty_folder(mailbox)
    for n in range(5):
        imap_account.append(make_message(n))
    result = mailbox_poll(mailbox_id=mailbox.pk)
    assert result.error == ""
    assert len(result.new_email_ids) == 5
    assert sorted(Email.objects.values_list("subject", flat=True)) == [f"Message {n}" for n in range(5)]

    again = mailbox_poll(mailbox_id=mailbox.pk)
    assert (again.new_email_ids, again.duplicate_count, again.error) == ([], 0, "")

    imap_account.append(make_message(5))
    imap_account.append(make_message(6))
    later = mailbox_poll(mailbox_id=mailbox.pk)
    assert len(later.new_email_ids) == 2
    assert set(Email.objects.filter(pk__in=later.new_email_ids).values_list("subject", flat=True)) == {
        "Message 5",
        "Message 6",
    }
    assert Email.objects.count() == 7
    mailbox.refresh_from_db()
    assert mailbox.imap_last_uid == 7
    assert (mailbox.consecutive_failures, mailbox.last_error) == (0, "")
    assert mailbox.last_success_at is not None


def test_stored_email_keeps_raw_original_and_fields(mailbox, imap_account):
    first_poll_of_empty_folder(mailbox)
    raw = make_message(1, extra_headers="Cc: Bob <bob@example.com>\r\n")
    uid = imap_account.append(raw)
    mailbox_poll(mailbox_id=mailbox.pk)
    email = Email.objects.get()
    with email.raw.open("rb") as stored:
        assert stored.read() == raw
    assert (email.uid, email.uidvalidity) == (uid, mailbox.__class__.objects.get().imap_uidvalidity)
    assert (email.from_name, email.from_address) == ("Sender 1", "sender1@example.com")
    assert email.message_id == "<msg-1@example.com>"
    assert email.cc == [["Bob", "bob@example.com"]]
    assert email.date == datetime(2026, 11, 2, 10, 1, tzinfo=UTC)
    assert email.size == len(raw)
    assert email.processing_status == ProcessingStatus.PENDING
    assert email.is_history is False


def test_seen_flags_are_untouched(mailbox, imap_account, dovecot_server):
    first_poll_of_empty_folder(mailbox)
    unread = imap_account.append(make_message(1))
    read = imap_account.append(make_message(2), flags=(rb"\Seen",))
    before = dovecot_server.flags(imap_account.username, "INBOX")
    mailbox_poll(mailbox_id=mailbox.pk)
    after = dovecot_server.flags(imap_account.username, "INBOX")
    assert Email.objects.count() == 2
    assert after == before
    assert rb"\Seen" not in after[unread]
    assert rb"\Seen" in after[read]


def test_uidvalidity_change_gives_no_duplicates(mailbox, imap_account, dovecot_server):
    first_poll_of_empty_folder(mailbox)
    for n in range(3):
        imap_account.append(make_message(n))
    assert len(mailbox_poll(mailbox_id=mailbox.pk).new_email_ids) == 3
    old_validity = Mailbox.objects.get().imap_uidvalidity

    dovecot_server.recreate_folder(imap_account.username, "INBOX")
    for n in range(3):  # the same messages come back under new UIDs ...
        imap_account.append(make_message(n))
    imap_account.append(make_message(3))  # ... plus one that is really new

    result = mailbox_poll(mailbox_id=mailbox.pk)
    assert result.error == ""
    assert result.duplicate_count == 3
    mailbox.refresh_from_db()
    assert mailbox.imap_uidvalidity != old_validity
    assert sorted(Email.objects.values_list("subject", flat=True)) == [f"Message {n}" for n in range(4)]
    assert mailbox_poll(mailbox_id=mailbox.pk).new_email_ids == []
    assert Email.objects.count() == 4


def test_same_message_id_with_other_content_is_not_dropped(mailbox, imap_account):
    first_poll_of_empty_folder(mailbox)
    imap_account.append(make_message(1, body="first text\r\n"))
    imap_account.append(make_message(1, body="another text\r\n"))  # broken sender reuses the ID
    imap_account.append(make_message(1, body="first text\r\n"))  # delivered twice: a duplicate
    result = mailbox_poll(mailbox_id=mailbox.pk)
    assert (len(result.new_email_ids), result.duplicate_count) == (2, 1)
    assert sorted(Email.objects.values_list("text_body", flat=True)) == ["another text\n", "first text\n"]


def test_connection_cut_mid_batch_then_rerun_gives_exact_count(mailbox, imap_account, settings):
    settings.MAILHUB_FETCH_BATCH_MESSAGES = 3
    first_poll_of_empty_folder(mailbox)
    for n in range(10):
        imap_account.append(make_message(n, size_pad=2000))
    with CuttingTcpProxy(imap_account.host, imap_account.port) as proxy:
        Mailbox.objects.filter(pk=mailbox.pk).update(imap_port=proxy.port)
        proxy.cut_after(12_000)  # in the middle of the second batch
        cut = mailbox_poll(mailbox_id=mailbox.pk)
        assert cut.error != ""
        assert cut.error_is_permanent is False
        stored_after_cut = Email.objects.count()
        assert stored_after_cut in (3, 6)  # whole batches only
        mailbox.refresh_from_db()
        assert mailbox.consecutive_failures == 1
        assert mailbox.imap_last_uid == stored_after_cut

        resumed = mailbox_poll(mailbox_id=mailbox.pk)
    assert resumed.error == ""
    assert len(resumed.new_email_ids) == 10 - stored_after_cut
    assert Email.objects.count() == 10
    assert sorted(Email.objects.values_list("uid", flat=True)) == list(range(1, 11))
    mailbox.refresh_from_db()
    assert mailbox.consecutive_failures == 0


@pytest.mark.django_db(transaction=True)
def test_two_pollers_at_once_store_each_message_once(imap_account):
    mailbox = MailboxFactory.on_dovecot(
        imap_account,
        history_import="all",
    )
    for n in range(30):
        imap_account.append(make_message(n))
    results, errors = [], []
    start = threading.Barrier(2)

    def poll() -> None:
        try:
            start.wait()
            results.append(mailbox_poll(mailbox_id=mailbox.pk))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=poll) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert Email.objects.count() == 30
    assert sorted(Email.objects.values_list("uid", flat=True)) == list(range(1, 31))
    skipped = [result for result in results if result.skipped_reason]
    assert len(skipped) <= 1
    # Once the lease is free again, a third poll finds nothing new.
    assert mailbox_poll(mailbox_id=mailbox.pk).history_count == 0
    assert Email.objects.count() == 30


@pytest.mark.django_db(transaction=True)
def test_a_slow_parse_holds_no_lock_so_another_writer_commits_meanwhile(imap_account, monkeypatch):
    from django.db import transaction

    from mailboxes.services import storing

    mailbox = MailboxFactory.on_dovecot(imap_account, history_import="none")
    first_poll_of_empty_folder(mailbox)
    for n in range(2):
        imap_account.append(make_message(n))
    real_parse = storing.parse_email
    committed_while_parsing: list[bool] = []

    def writer() -> None:
        try:
            # The same mailbox row: on PostgreSQL the poll's transaction locks it (lease renewal),
            # on SQLite any write waits for the one write lock.
            with transaction.atomic():
                Mailbox.objects.filter(pk=mailbox.pk).update(label="renamed meanwhile")
        finally:
            connections.close_all()

    def slow_parse(raw: bytes):
        # Far less than SQLite's busy timeout (20 s): a writer blocked by a lock that the parse
        # holds is still waiting when this gives up.
        thread = threading.Thread(target=writer)
        thread.start()
        thread.join(3)
        committed_while_parsing.append(not thread.is_alive())
        return real_parse(raw)

    monkeypatch.setattr(storing, "parse_email", slow_parse)
    result = mailbox_poll(mailbox_id=mailbox.pk)
    assert (result.error, len(result.new_email_ids)) == ("", 2)
    assert committed_while_parsing == [True, True]
    mailbox.refresh_from_db()
    assert mailbox.label == "renamed meanwhile"


def test_expired_lease_of_a_dead_worker_is_taken_over(mailbox, imap_account):
    first_poll_of_empty_folder(mailbox)
    imap_account.append(make_message(1))
    Mailbox.objects.filter(pk=mailbox.pk).update(
        poll_lease_token="dead-worker", poll_lease_expires_at=timezone.now() + timedelta(minutes=5)
    )
    assert mailbox_poll(mailbox_id=mailbox.pk).skipped_reason != ""
    assert Email.objects.count() == 0
    Mailbox.objects.filter(pk=mailbox.pk).update(poll_lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert len(mailbox_poll(mailbox_id=mailbox.pk).new_email_ids) == 1


@pytest.mark.parametrize(
    ("history_import", "since", "expected_history"),
    [("all", None, 3), ("none", None, 0), ("since", date(2026, 11, 1), 2)],
)
def test_history_import_modes_trigger_nothing(imap_account, history_import, since, expected_history):
    old = datetime(2026, 10, 1, 12, tzinfo=UTC)
    recent = datetime(2026, 11, 5, 12, tzinfo=UTC)
    imap_account.append(make_message(1), msg_time=old)
    imap_account.append(make_message(2), msg_time=recent)
    imap_account.append(make_message(3), msg_time=recent)
    mailbox = MailboxFactory.on_dovecot(
        imap_account,
        history_import=history_import,
        history_since=since,
    )
    result = mailbox_poll(mailbox_id=mailbox.pk)
    assert (result.error, result.new_email_ids, result.history_count) == ("", [], expected_history)
    assert Email.objects.count() == expected_history
    assert set(Email.objects.values_list("is_history", flat=True)) <= {True}
    assert set(Email.objects.values_list("processing_status", flat=True)) <= {ProcessingStatus.SKIPPED}

    imap_account.append(make_message(4))
    after = mailbox_poll(mailbox_id=mailbox.pk)
    assert len(after.new_email_ids) == 1
    assert Email.objects.get(pk=after.new_email_ids[0]).is_history is False
    assert Email.objects.count() == expected_history + 1


def test_wrong_password_is_recorded_with_backoff(mailbox):
    Mailbox.objects.filter(pk=mailbox.pk).update()
    mailbox.imap_password = "wrong"
    mailbox.save()
    result = mailbox_poll(mailbox_id=mailbox.pk)
    assert result.error_is_permanent is True
    assert "login failed" in result.error
    mailbox.refresh_from_db()
    assert mailbox.consecutive_failures == 1
    assert "login failed" in mailbox.last_error
    first_delay = mailbox.next_poll_at - mailbox.last_polled_at
    mailbox_poll(mailbox_id=mailbox.pk)
    mailbox.refresh_from_db()
    assert mailbox.consecutive_failures == 2
    assert mailbox.next_poll_at - mailbox.last_polled_at > first_delay


def test_connection_refused_and_missing_folder_are_recorded(mailbox, imap_account):
    from tests.servers.common import free_port

    Mailbox.objects.filter(pk=mailbox.pk).update(imap_port=free_port())
    refused = mailbox_poll(mailbox_id=mailbox.pk)
    assert "refused" in refused.error
    assert refused.error_is_permanent is False

    Mailbox.objects.filter(pk=mailbox.pk).update(imap_port=imap_account.port, imap_folder="Nope")
    missing = mailbox_poll(mailbox_id=mailbox.pk)
    assert "'Nope' does not exist" in missing.error
    assert missing.error_is_permanent is True
    assert Mailbox.objects.get(pk=mailbox.pk).consecutive_failures == 2


def test_poll_mailboxes_command_prints_a_line_per_mailbox(mailbox, imap_account, capsys):
    first_poll_of_empty_folder(mailbox)
    imap_account.append(make_message(1))
    broken = MailboxFactory(label="Broken", imap_host="127.0.0.1", imap_port=1, imap_security="none")
    with pytest.raises(CommandError):
        call_command("poll_mailboxes")
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{mailbox.label}: 1 new, 0 history, 0 duplicate(s)")
    assert out[1].startswith("Broken: 0 new")
    assert "refused" in out[1]
    call_command("poll_mailboxes", "--mailbox", str(mailbox.pk))
    assert capsys.readouterr().out.startswith(f"{mailbox.label}: 0 new")
    assert broken.emails.count() == 0


def test_dispatcher_claims_each_due_mailbox_once():
    now = timezone.now()
    due = MailboxFactory(next_poll_at=now - timedelta(seconds=1))
    never_polled = MailboxFactory(next_poll_at=None)
    MailboxFactory(next_poll_at=now + timedelta(minutes=1))
    MailboxFactory(is_active=False)
    assert sorted(mailboxes_claim_due_polls(now=now)) == sorted([due.pk, never_polled.pk])
    assert mailboxes_claim_due_polls(now=now) == []  # already claimed: not enqueued twice


def test_silent_server_times_out_and_unknown_host_is_reported(mailbox, settings):
    import socket

    settings.MAILHUB_NETWORK_TIMEOUT = 0.5
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never says a word
        port = silent.getsockname()[1]
        Mailbox.objects.filter(pk=mailbox.pk).update(imap_port=port)
        timed_out = mailbox_poll(mailbox_id=mailbox.pk)
    assert timed_out.error == f"IMAP connection to 127.0.0.1:{port} timed out"
    assert timed_out.error_is_permanent is False

    Mailbox.objects.filter(pk=mailbox.pk).update(imap_host="mailhub-test.invalid")
    unknown = mailbox_poll(mailbox_id=mailbox.pk)
    assert unknown.error.startswith("IMAP host 'mailhub-test.invalid' not found (DNS)")
    assert unknown.error_is_permanent is False
    mailbox.refresh_from_db()
    assert mailbox.consecutive_failures == 2
    assert mailbox.last_error == unknown.error


def test_parser_crash_on_one_message_does_not_stop_the_batch(mailbox, imap_account, monkeypatch):
    from mailboxes.services import storing

    first_poll_of_empty_folder(mailbox)
    for n in range(3):
        imap_account.append(make_message(n))
    real_parse = storing.parse_email

    def parse_or_crash(raw: bytes):
        if b"Subject: Message 1\r\n" in raw:
            raise RecursionError("maximum recursion depth exceeded")
        return real_parse(raw)

    monkeypatch.setattr(storing, "parse_email", parse_or_crash)
    result = mailbox_poll(mailbox_id=mailbox.pk)
    assert (result.error, len(result.new_email_ids)) == ("", 3)
    crashed = Email.objects.get(uid=2)
    assert crashed.parse_problem == "parser crashed: RecursionError: maximum recursion depth exceeded"
    assert crashed.subject == ""
    with crashed.raw.open("rb") as raw:
        assert b"Subject: Message 1" in raw.read()  # the original is kept whole
    assert sorted(Email.objects.exclude(uid=2).values_list("subject", flat=True)) == [
        "Message 0",
        "Message 2",
    ]


def test_storage_failure_rolls_back_the_batch_and_is_recorded_as_our_error(
    mailbox, imap_account, monkeypatch
):
    from mailboxes.services import storing

    first_poll_of_empty_folder(mailbox)
    for n in range(3):
        imap_account.append(make_message(n))
    real_store = storing.Attachment.objects.bulk_create
    calls = {"n": 0}

    def disk_full(objs, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real_store(objs, *args, **kwargs)

    monkeypatch.setattr(storing.Attachment.objects, "bulk_create", disk_full)
    failed = mailbox_poll(mailbox_id=mailbox.pk)
    assert failed.error == "internal error while storing: OSError: [Errno 28] No space left on device"
    assert failed.error_is_permanent is False
    assert Email.objects.count() == 0  # the whole batch rolled back with its cursor
    mailbox.refresh_from_db()
    assert (mailbox.imap_last_uid, mailbox.consecutive_failures) == (0, 1)
    assert mailbox.last_success_at is not None  # from the first poll only
    monkeypatch.undo()
    assert len(mailbox_poll(mailbox_id=mailbox.pk).new_email_ids) == 3
