"""mailhub_status: states, counts, one query whatever the number of mailboxes, exit codes."""

import json
from datetime import timedelta

import pytest
from django.core.management import call_command, execute_from_command_line
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from mailboxes.models import Mailbox, OutboundStatus, ProcessingStatus
from mailboxes.oauth_models import AuthMethod, GrantPurpose, GrantStatus, OAuthGrant
from mailhub.status import MailboxState, mailbox_statuses
from tests.factories import (
    AutoReplyFactory,
    AutoResponseRuleFactory,
    EmailFactory,
    MailboxFactory,
    UserFactory,
    outbound_message,
)

pytestmark = pytest.mark.django_db


def _mailbox(label: str, *, created_ago: timedelta = timedelta(0), **fields) -> Mailbox:
    mailbox = MailboxFactory(label=label, **fields)
    if created_ago:
        # created_at is auto_now_add: only an UPDATE can put it in the past.
        Mailbox.objects.filter(pk=mailbox.pk).update(created_at=timezone.now() - created_ago)
    return mailbox


def _by_label(now=None):
    return {status.label: status for status in mailbox_statuses(now=now)}


def test_states_of_ok_failing_stale_and_inactive_mailboxes():
    now = timezone.now()
    old = timedelta(days=1)
    _mailbox("ok", created_ago=old, last_success_at=now - timedelta(seconds=30), poll_interval=60)
    _mailbox(
        "failing",
        created_ago=old,
        last_success_at=now - timedelta(seconds=30),
        last_polled_at=now - timedelta(seconds=5),
        consecutive_failures=2,
        last_error="connection refused",
    )
    # An error text alone (failures already reset by hand) still means failing.
    _mailbox("error only", created_ago=old, last_success_at=now, last_error="login failed")
    # poll_interval 60: the 10 minute floor applies, not 3 x 60 s.
    _mailbox("stale", created_ago=old, last_success_at=now - timedelta(minutes=10, seconds=1))
    _mailbox("not yet stale", created_ago=old, last_success_at=now - timedelta(minutes=9, seconds=59))
    # poll_interval 600: 3 x 600 s = 30 minutes.
    _mailbox("slow ok", created_ago=old, poll_interval=600, last_success_at=now - timedelta(minutes=29))
    _mailbox("slow stale", created_ago=old, poll_interval=600, last_success_at=now - timedelta(minutes=31))
    _mailbox("never polled, old", created_ago=timedelta(minutes=11))
    _mailbox("never polled, new", created_ago=timedelta(minutes=1))
    _mailbox("inactive", created_ago=old, is_active=False, consecutive_failures=3, last_error="boom")

    statuses = _by_label(now)

    assert {label: status.state for label, status in statuses.items()} == {
        "ok": "ok",
        "failing": "failing",
        "error only": "failing",
        "stale": "stale",
        "not yet stale": "ok",
        "slow ok": "ok",
        "slow stale": "stale",
        "never polled, old": "stale",
        "never polled, new": "ok",
        "inactive": "inactive",
    }
    failing = statuses["failing"]
    assert failing.consecutive_failures == 2
    assert failing.last_error == "connection refused"
    assert failing.lag == 30.0
    assert failing.last_polled_at == now - timedelta(seconds=5)
    assert statuses["ok"].lag == 30.0
    assert statuses["never polled, old"].lag is None
    assert [status.needs_attention for status in mailbox_statuses(now=now)] == [
        status.state in ("failing", "stale") for status in mailbox_statuses(now=now)
    ]
    assert list(statuses) == sorted(statuses)  # ordered by label


def test_backlog_and_auto_reply_counts_are_per_mailbox():
    box, other = MailboxFactory(label="box"), MailboxFactory(label="other")
    for status in ["pending", "pending", "failed", "done", "skipped"]:
        EmailFactory(mailbox=box, processing_status=status)
    EmailFactory(mailbox=other, processing_status=ProcessingStatus.PENDING)
    rule = AutoResponseRuleFactory(mailbox=box)
    for status in ["pending", "sending", "failed", "failed", "failed", "sent", "suppressed"]:
        AutoReplyFactory(email=EmailFactory(mailbox=box, processing_status="done"), rule=rule, status=status)
    other_rule = AutoResponseRuleFactory(mailbox=other)
    AutoReplyFactory(
        email=EmailFactory(mailbox=other, processing_status="done"), rule=other_rule, status="failed"
    )

    statuses = _by_label()

    assert (statuses["box"].backlog, statuses["box"].auto_replies_pending) == (3, 2)
    assert statuses["box"].auto_replies_failed == 3
    assert (statuses["other"].backlog, statuses["other"].auto_replies_pending) == (1, 0)
    assert statuses["other"].auto_replies_failed == 1


def test_empty_mailbox_counts_zero_not_none():
    MailboxFactory(label="empty")
    [status] = mailbox_statuses()
    assert (status.backlog, status.auto_replies_pending, status.auto_replies_failed) == (0, 0, 0)


def _populate(count: int) -> None:
    for _ in range(count):
        mailbox = MailboxFactory()
        rule = AutoResponseRuleFactory(mailbox=mailbox)
        for status in ("pending", "failed", "sent"):
            AutoReplyFactory(email=EmailFactory(mailbox=mailbox), rule=rule, status=status)


@pytest.mark.parametrize("mailboxes", [2, 6])
def test_one_query_whatever_the_number_of_mailboxes(django_assert_num_queries, mailboxes):
    _populate(mailboxes)
    with django_assert_num_queries(1):
        statuses = mailbox_statuses()
    assert len(statuses) == mailboxes
    assert {(s.backlog, s.auto_replies_pending, s.auto_replies_failed) for s in statuses} == {(3, 1, 1)}


def test_admin_list_shows_state_and_backlog_without_a_query_per_row(client):
    client.force_login(UserFactory(is_superuser=True, is_staff=True))
    url = reverse("admin:mailboxes_mailbox_changelist")
    _populate(2)
    with CaptureQueriesContext(connection) as with_two:
        assert client.get(url).status_code == 200
    _populate(4)
    with CaptureQueriesContext(connection) as with_six:
        page = client.get(url).content.decode()
    assert Mailbox.objects.count() == 6
    assert len(with_two) == len(with_six)
    assert page.count('<td class="field-state">ok</td>') == 6
    assert page.count('<td class="field-backlog">3</td>') == 6

    MailboxFactory(label="Broken", consecutive_failures=1, last_error="refused")
    page = client.get(url).content.decode()
    assert page.count('<td class="field-state">failing</td>') == 1
    assert page.count('<td class="field-backlog">0</td>') == 1
    # The backlog column sorts (column 6 after the action checkbox): Broken's 0 comes last.
    descending = client.get(url, {"o": "-6"}).content.decode()
    assert descending.index("Broken") > descending.index('<td class="field-backlog">3</td>')
    ascending = client.get(url, {"o": "6"}).content.decode()
    assert ascending.index("Broken") < ascending.index('<td class="field-backlog">3</td>')


def test_admin_actions_still_work_on_the_annotated_queryset(client):
    client.force_login(UserFactory(is_superuser=True, is_staff=True))
    mailbox = MailboxFactory()
    EmailFactory(mailbox=mailbox)
    response = client.post(
        reverse("admin:mailboxes_mailbox_changelist"),
        {"action": "delete_selected", "_selected_action": [mailbox.pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert not Mailbox.objects.exists()


def test_command_prints_a_table_and_exits_0_when_all_is_well(capsys):
    now = timezone.now()
    _mailbox("Support", last_success_at=now - timedelta(seconds=12))
    _mailbox("Archive", is_active=False)
    EmailFactory(mailbox=Mailbox.objects.get(label="Support"))

    call_command("mailhub_status")

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "ID",
        "MAILBOX",
        "STATE",
        "LAST",
        "POLL",
        "LAST",
        "SUCCESS",
        "NEXT",
        "POLL",
        "FAILURES",
        "BACKLOG",
        "REPLIES",
        "PENDING",
        "REPLIES",
        "FAILED",
        "ANSWERS",
        "FAILED",
        "ANSWERS",
        "UNCERTAIN",
        "LAST",
        "ERROR",
    ]
    # Archive before Support (by label); every row aligned under the header.
    assert lines[1].split()[1:3] == ["Archive", "inactive"]
    assert lines[2].split()[1:3] == ["Support", "ok"]
    assert "12s ago" in lines[2]
    assert lines[1].index("inactive") == lines[2].index("ok") == lines[0].index("STATE")
    # failures, backlog, replies pending and failed, answers failed and uncertain (no last error)
    assert lines[2].split()[-6:] == ["0", "1", "0", "0", "0", "0"]
    assert lines[-1] == "2 mailbox(es): 1 inactive, 1 ok"


def test_command_exits_1_when_a_mailbox_is_failing(capsys):
    _mailbox("Support", last_success_at=timezone.now())
    _mailbox("Sales", consecutive_failures=4, last_error="IMAP login failed:\nbad credentials")

    with pytest.raises(CommandError) as raised:
        call_command("mailhub_status")

    assert raised.value.returncode == 1
    assert str(raised.value) == "1 mailbox(es) need attention: Sales (failing)"
    out = capsys.readouterr().out
    assert "FAILING" in out
    assert "IMAP login failed: bad credentials" in out  # one line per mailbox


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"last_error": "timeout"}, 1),
        ({"last_success_at": "stale"}, 1),
        ({"last_success_at": "recent"}, 0),
    ],
)
def test_process_exit_code(fields, code, capsys):
    now = timezone.now()
    moments = {"stale": now - timedelta(hours=1), "recent": now}
    _mailbox("Support", **{key: moments.get(value, value) for key, value in fields.items()})

    assert _exit_code(["manage.py", "mailhub_status"]) == code


def _exit_code(argv: list[str]) -> int:
    """The process exit code of a command, run in-process so that it sees the test database."""
    try:
        execute_from_command_line(argv)
    except SystemExit as exc:
        return exc.code
    return 0


def test_json_output_parses(capsys):
    now = timezone.now()
    ok = _mailbox("Support", last_success_at=now - timedelta(seconds=5), next_poll_at=now)
    _mailbox("Sales", consecutive_failures=1, last_error="refused")
    EmailFactory(mailbox=ok, processing_status="failed")

    with pytest.raises(CommandError):
        call_command("mailhub_status", "--json")

    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False
    sales, support = document["mailboxes"]
    assert (sales["label"], sales["state"], sales["consecutive_failures"]) == ("Sales", "failing", 1)
    assert (sales["last_error"], sales["last_success_at"], sales["lag"]) == ("refused", None, None)
    assert (support["label"], support["state"], support["backlog"]) == ("Support", "ok", 1)
    assert support["id"] == ok.pk
    assert support["last_success_at"] == (now - timedelta(seconds=5)).isoformat()
    assert 5 <= support["lag"] < 60
    assert set(support) == {
        "id",
        "label",
        "is_active",
        "poll_interval",
        "last_polled_at",
        "last_success_at",
        "lag",
        "backlog",
        "consecutive_failures",
        "last_error",
        "next_poll_at",
        "auto_replies_pending",
        "auto_replies_failed",
        "outbound_failed",
        "outbound_uncertain",
        "oauth_needs_reconnect",
        "state",
    }
    assert support["oauth_needs_reconnect"] == []


def test_json_ok_when_no_mailbox_needs_attention(capsys):
    _mailbox("Support", last_success_at=timezone.now())
    call_command("mailhub_status", "--json")
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is True
    assert [m["state"] for m in document["mailboxes"]] == ["ok"]


def test_failed_and_uncertain_answers_are_counted_per_mailbox():
    box, other = _mailbox("Support"), _mailbox("Sales")
    for status in (
        OutboundStatus.FAILED,
        OutboundStatus.FAILED,
        OutboundStatus.UNCERTAIN,
        OutboundStatus.SENT,
    ):
        outbound_message(mailbox=box, status=status)
    outbound_message(mailbox=other, status=OutboundStatus.UNCERTAIN)
    outbound_message(mailbox=other, status=OutboundStatus.PENDING)
    statuses = {status.label: status for status in mailbox_statuses()}
    assert (statuses["Support"].outbound_failed, statuses["Support"].outbound_uncertain) == (2, 1)
    assert (statuses["Sales"].outbound_failed, statuses["Sales"].outbound_uncertain) == (0, 1)


# -- OAuth2 connections that need to be reconnected --------------------------------------------


def _grant(mailbox: Mailbox, purpose: GrantPurpose, status: GrantStatus) -> OAuthGrant:
    return OAuthGrant.objects.create(
        mailbox=mailbox, purpose=purpose, status=status, provider="google", last_error="invalid_grant"
    )


def test_a_revoked_oauth2_grant_is_its_own_state_for_the_protocols_that_use_it():
    now = timezone.now()
    healthy = {"last_success_at": now}
    oauth2 = {"imap_auth": AuthMethod.OAUTH2, "smtp_auth": AuthMethod.OAUTH2}
    # The shared grant serves both protocols.
    both = _mailbox("both", **oauth2, consecutive_failures=1, last_error="IMAP OAuth2 ... renewed")
    _grant(both, GrantPurpose.SHARED, GrantStatus.NEEDS_RECONNECT)
    # Polls still work (password IMAP), but answers and auto-replies can't go out.
    smtp_only = _mailbox("smtp only", smtp_auth=AuthMethod.OAUTH2, **healthy)
    _grant(smtp_only, GrantPurpose.SHARED, GrantStatus.NEEDS_RECONNECT)
    # IMAP has its own connected grant: the revoked shared one serves SMTP only, by password here.
    own = _mailbox("own imap grant", imap_auth=AuthMethod.OAUTH2, **healthy)
    _grant(own, GrantPurpose.SHARED, GrantStatus.NEEDS_RECONNECT)
    _grant(own, GrantPurpose.IMAP, GrantStatus.CONNECTED)
    # An SMTP grant needing a reconnect, and the shared one fine for IMAP.
    split = _mailbox("split", **oauth2, **healthy)
    _grant(split, GrantPurpose.SHARED, GrantStatus.CONNECTED)
    _grant(split, GrantPurpose.SMTP, GrantStatus.NEEDS_RECONNECT)
    # Password logins: a left-over grant is used by nothing.
    password = _mailbox("password", **healthy)
    _grant(password, GrantPurpose.SHARED, GrantStatus.NEEDS_RECONNECT)
    inactive = _mailbox("inactive", **oauth2, is_active=False)
    _grant(inactive, GrantPurpose.SHARED, GrantStatus.NEEDS_RECONNECT)
    not_connected = _mailbox("not connected yet", **oauth2, **healthy)
    _grant(not_connected, GrantPurpose.SHARED, GrantStatus.NOT_CONNECTED)

    assert {label: (s.state, s.oauth_needs_reconnect) for label, s in _by_label(now).items()} == {
        "both": (MailboxState.NEEDS_RECONNECT, ["imap", "smtp"]),
        "smtp only": (MailboxState.NEEDS_RECONNECT, ["smtp"]),
        "own imap grant": (MailboxState.OK, []),
        "split": (MailboxState.NEEDS_RECONNECT, ["smtp"]),
        "password": (MailboxState.OK, []),
        "inactive": (MailboxState.INACTIVE, ["imap", "smtp"]),
        "not connected yet": (MailboxState.OK, []),
    }


def test_command_and_json_report_needs_reconnect_and_exit_1(capsys):
    mailbox = _mailbox("Shared", smtp_auth=AuthMethod.OAUTH2, last_success_at=timezone.now())
    _grant(mailbox, GrantPurpose.SHARED, GrantStatus.NEEDS_RECONNECT)

    with pytest.raises(CommandError) as raised:
        call_command("mailhub_status")
    assert (raised.value.returncode, str(raised.value)) == (
        1,
        "1 mailbox(es) need attention: Shared (needs_reconnect)",
    )
    assert capsys.readouterr().out.splitlines()[1].split()[1:3] == ["Shared", "NEEDS_RECONNECT"]

    with pytest.raises(CommandError):
        call_command("mailhub_status", "--json")
    (shared,) = json.loads(capsys.readouterr().out)["mailboxes"]
    assert (shared["state"], shared["oauth_needs_reconnect"]) == ("needs_reconnect", ["smtp"])


def test_admin_list_shows_needs_reconnect_without_a_query_per_row(client):
    client.force_login(UserFactory(is_superuser=True, is_staff=True))
    url = reverse("admin:mailboxes_mailbox_changelist")
    mailbox = _mailbox("Shared", imap_auth=AuthMethod.OAUTH2)
    _grant(mailbox, GrantPurpose.SHARED, GrantStatus.NEEDS_RECONNECT)
    with CaptureQueriesContext(connection) as with_one:
        page = client.get(url).content.decode()
    assert page.count('<td class="field-state">needs_reconnect</td>') == 1
    for n in range(3):
        _grant(
            _mailbox(f"More {n}", imap_auth=AuthMethod.OAUTH2),
            GrantPurpose.SHARED,
            GrantStatus.NEEDS_RECONNECT,
        )
    with CaptureQueriesContext(connection) as with_four:
        page = client.get(url).content.decode()
    assert page.count('<td class="field-state">needs_reconnect</td>') == 4
    assert len(with_one) == len(with_four)
