"""Auto-responses end to end against the real recording SMTP server: sent once, never a loop."""

from datetime import timedelta

import pytest
from django.utils import timezone

from autoresponse.models import AutoReply, AutoReplyStatus
from autoresponse.selectors import auto_replies_due
from autoresponse.services import auto_replies_mark_stale_sending, auto_reply_send
from processing.services import email_process
from tests.factories import (
    AutoReplyFactory,
    AutoResponseRuleFactory,
    EmailFactory,
    EmailTemplateFactory,
    MailboxFactory,
    RuleConditionFactory,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.fixture
def mailbox(smtp_server):
    return MailboxFactory(
        email="support@acme.example",
        label="ACME Support",
        processing_action="case",
        smtp_host=smtp_server.host,
        smtp_port=smtp_server.port,
        smtp_security="none",
        smtp_username="",
    )


@pytest.fixture
def template():
    return EmailTemplateFactory(
        subject="[{{ case.reference }}] Re: {{ email.subject }}",
        text_body="Dear {{ email.sender_name }},\nyour request {{ case.reference }} was received by "
        "{{ mailbox.label }}.",
    )


def new_email(mailbox, **fields):
    defaults = {
        "subject": "Printer broken",
        "from_name": "Ann Customer",
        "from_address": "ann@customer.example",
        "message_id": "<q1@customer.example>",
        "headers": [["From", "Ann Customer <ann@customer.example>"], ["Subject", "Printer broken"]],
    }
    defaults.update(fields)
    return EmailFactory(mailbox=mailbox, **defaults)


def process_and_send(email) -> list[AutoReply]:
    outcome = email_process(email_id=email.pk)
    return [auto_reply_send(auto_reply_id=reply_id) for reply_id in outcome.auto_reply_ids]


def test_matching_rule_sends_exactly_one_reply_with_the_right_headers(mailbox, template, smtp_server):
    rule = AutoResponseRuleFactory(mailbox=mailbox, template=template)
    RuleConditionFactory(rule=rule, field="subject", operator="contains", value="PRINTER")
    email = new_email(mailbox, references="<older@customer.example>")
    replies = process_and_send(email)
    assert [reply.status for reply in replies] == [AutoReplyStatus.SENT]
    received = smtp_server.wait_for(1)
    assert len(received) == 1
    message = received[0].message
    case = email.__class__.objects.get(pk=email.pk).case
    assert received[0].mail_from == "support@acme.example"
    assert list(received[0].rcpt_tos) == ["ann@customer.example"]
    assert message["From"] == "ACME Support <support@acme.example>"
    assert message["To"] == "ann@customer.example"
    assert message["Subject"] == f"[#{case.number}] Re: Printer broken"
    assert message["In-Reply-To"] == "<q1@customer.example>"
    assert message["References"] == "<older@customer.example> <q1@customer.example>"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["X-Auto-Response-Suppress"] == "All"
    assert message["Message-ID"] == replies[0].message_id
    assert message["Message-ID"].endswith("@acme.example>")
    assert message.get_content() == (
        f"Dear Ann Customer,\nyour request #{case.number} was received by ACME Support.\n"
    )
    reply = AutoReply.objects.get()
    assert (reply.email, reply.rule, reply.recipient, reply.attempts) == (
        email,
        rule,
        "ann@customer.example",
        1,
    )
    assert reply.sent_at is not None
    assert "Auto-Submitted: auto-replied" in reply.rendered_message


def test_reply_to_is_honoured(mailbox, template, smtp_server):
    AutoResponseRuleFactory(mailbox=mailbox, template=template)
    process_and_send(new_email(mailbox, reply_to=[["Desk", "desk@customer.example"]]))
    assert list(smtp_server.wait_for(1)[0].rcpt_tos) == ["desk@customer.example"]


def test_no_matching_rule_sends_nothing(mailbox, template, smtp_server):
    rule = AutoResponseRuleFactory(mailbox=mailbox, template=template)
    RuleConditionFactory(rule=rule, field="subject", operator="contains", value="invoice")
    assert process_and_send(new_email(mailbox)) == []
    assert AutoReply.objects.count() == 0
    assert smtp_server.messages == []


def test_rules_run_in_order_and_stop(mailbox, template, smtp_server):
    second = AutoResponseRuleFactory(mailbox=mailbox, template=template, order=2, name="second")
    first = AutoResponseRuleFactory(mailbox=mailbox, template=template, order=1, name="first")
    process_and_send(new_email(mailbox))
    assert list(AutoReply.objects.values_list("rule_name", flat=True)) == ["first"]
    assert len(smtp_server.wait_for(1)) == 1

    first.stop_after_match = False
    first.save()
    process_and_send(new_email(mailbox, from_address="bob@customer.example", message_id="<b@x>"))
    decided = dict(
        AutoReply.objects.filter(email__from_address="bob@customer.example").values_list(
            "rule_name", "status"
        )
    )
    # The second rule matched too, but the per-sender rate limit keeps it to one reply.
    assert decided == {"first": AutoReplyStatus.SENT, "second": AutoReplyStatus.SUPPRESSED}
    assert second.replies.get().reason.startswith("rate limit")


@pytest.mark.parametrize(("match", "expected_sent"), [("all", 0), ("any", 1)])
def test_match_all_or_any(mailbox, template, smtp_server, match, expected_sent):
    rule = AutoResponseRuleFactory(mailbox=mailbox, template=template, match=match)
    RuleConditionFactory(rule=rule, field="subject", operator="contains", value="printer")
    RuleConditionFactory(rule=rule, field="sender_address", operator="ends_with", value="@other.example")
    process_and_send(new_email(mailbox))
    assert AutoReply.objects.filter(status=AutoReplyStatus.SENT).count() == expected_sent
    assert len(smtp_server.messages) == expected_sent


LOOP_CASES = [
    ({"headers": [["Auto-Submitted", "auto-replied"]]}, "Auto-Submitted"),
    ({"headers": [["Precedence", "bulk"]]}, "Precedence"),
    ({"headers": [["Precedence", "junk"]]}, "Precedence"),
    ({"headers": [["Precedence", "list"]]}, "Precedence"),
    ({"headers": [["List-Id", "<users.lists.example>"]]}, "List-Id"),
    ({"headers": [["List-Unsubscribe", "<mailto:u@lists.example>"]]}, "List-Unsubscribe"),
    ({"headers": [["X-Auto-Response-Suppress", "All"]]}, "X-Auto-Response-Suppress"),
    ({"headers": [["Return-Path", "<>"]]}, "Return-Path"),
    ({"from_address": "MAILER-DAEMON@mx.example"}, "robot"),
    ({"from_address": "postmaster@mx.example"}, "robot"),
    ({"from_address": "no-reply@shop.example"}, "robot"),
    ({"from_address": "noreply@shop.example"}, "robot"),
    ({"from_address": "support@acme.example"}, "own"),
    ({"from_address": "sales@acme.example"}, "own"),
    ({"headers": [["Content-Type", 'multipart/report; report-type="delivery-status"']]}, "multipart/report"),
]


@pytest.mark.parametrize(("fields", "reason_part"), LOOP_CASES)
def test_loop_prevention_sends_nothing_and_records_why(mailbox, template, smtp_server, fields, reason_part):
    MailboxFactory(email="sales@acme.example")  # another mailbox of this installation
    AutoResponseRuleFactory(mailbox=mailbox, template=template)
    assert process_and_send(new_email(mailbox, **fields)) == []
    reply = AutoReply.objects.get()
    assert reply.status == AutoReplyStatus.SUPPRESSED
    assert reason_part.lower() in reply.reason.lower()
    assert smtp_server.messages == []


def test_rate_limit_per_sender_and_window(mailbox, template, smtp_server):
    mailbox.auto_reply_window_hours = 24
    mailbox.save()
    AutoResponseRuleFactory(mailbox=mailbox, template=template)
    process_and_send(new_email(mailbox, message_id="<1@x>"))
    process_and_send(new_email(mailbox, message_id="<2@x>"))
    process_and_send(new_email(mailbox, message_id="<3@x>", from_address="other@customer.example"))
    assert sorted(m.rcpt_tos[0] for m in smtp_server.wait_for(2)) == [
        "ann@customer.example",
        "other@customer.example",
    ]
    assert AutoReply.objects.filter(status=AutoReplyStatus.SUPPRESSED).count() == 1
    AutoReply.objects.update(created_at=timezone.now() - timedelta(hours=25))
    process_and_send(new_email(mailbox, message_id="<4@x>"))
    assert len(smtp_server.wait_for(3)) == 3


def test_reply_that_joins_a_case_gets_no_auto_response_unless_the_rule_says_so(
    mailbox, template, smtp_server
):
    rule = AutoResponseRuleFactory(mailbox=mailbox, template=template)
    process_and_send(new_email(mailbox))
    mailbox.auto_reply_window_hours = 0  # only the joining rule is under test here
    mailbox.save()
    process_and_send(new_email(mailbox, message_id="<r1@x>", in_reply_to="<q1@customer.example>"))
    assert len(smtp_server.wait_for(1)) == 1
    assert AutoReply.objects.count() == 1
    rule.answer_replies = True
    rule.save()
    process_and_send(new_email(mailbox, message_id="<r2@x>", in_reply_to="<q1@customer.example>"))
    assert len(smtp_server.wait_for(2)) == 2


def test_smtp_down_then_up_sends_exactly_once(mailbox, template, smtp_server):
    AutoResponseRuleFactory(mailbox=mailbox, template=template)
    smtp_server.stop()
    [reply] = process_and_send(new_email(mailbox))
    assert reply.status == AutoReplyStatus.PENDING
    assert "refused" in reply.reason
    assert reply.next_attempt_at > timezone.now()
    assert auto_replies_due(mailbox_id=mailbox.pk) == []  # not before its backoff time

    smtp_server.start()
    AutoReply.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert auto_replies_due(mailbox_id=mailbox.pk) == [reply.pk]
    assert auto_reply_send(auto_reply_id=reply.pk).status == AutoReplyStatus.SENT
    assert auto_reply_send(auto_reply_id=reply.pk).status == AutoReplyStatus.SENT  # a rerun: no-op
    assert auto_replies_due(mailbox_id=mailbox.pk) == []
    assert len(smtp_server.wait_for(1)) == 1
    reply.refresh_from_db()
    assert reply.attempts == 2


def test_temporary_451_is_retried_and_permanent_550_fails(mailbox, template, smtp_server):
    AutoResponseRuleFactory(mailbox=mailbox, template=template)
    smtp_server.set_failure(451)
    [reply] = process_and_send(new_email(mailbox))
    assert (reply.status, "451" in reply.reason) == (AutoReplyStatus.PENDING, True)
    smtp_server.set_failure(550)
    AutoReply.objects.update(next_attempt_at=None)
    reply = auto_reply_send(auto_reply_id=reply.pk)
    assert (reply.status, "550" in reply.reason) == (AutoReplyStatus.FAILED, True)
    assert smtp_server.messages == []


def test_smtp_login_is_used(template, smtp_auth_server):
    mailbox = MailboxFactory(
        processing_action="case",
        smtp_host=smtp_auth_server.host,
        smtp_port=smtp_auth_server.port,
        smtp_security="none",
        smtp_username="smtp-user",
        smtp_password="secret",
    )
    AutoResponseRuleFactory(mailbox=mailbox, template=template)
    [reply] = process_and_send(new_email(mailbox))
    assert reply.status == AutoReplyStatus.SENT
    assert smtp_auth_server.wait_for(1)[0].auth_login == "smtp-user"


def test_stale_sending_becomes_uncertain_not_resent(mailbox, template, smtp_server):
    AutoResponseRuleFactory(mailbox=mailbox, template=template)
    email_process(email_id=new_email(mailbox).pk)
    AutoReply.objects.update(status=AutoReplyStatus.SENDING, claimed_at=timezone.now() - timedelta(hours=1))
    assert auto_replies_mark_stale_sending(mailbox_id=mailbox.pk) == 1
    assert auto_replies_due(mailbox_id=mailbox.pk) == []
    reply = AutoReply.objects.get()
    assert reply.status == AutoReplyStatus.UNCERTAIN
    assert "not retried" in reply.reason
    assert auto_reply_send(auto_reply_id=reply.pk).status == AutoReplyStatus.UNCERTAIN
    assert smtp_server.messages == []


def test_reading_what_is_due_changes_no_row(mailbox, template):
    AutoResponseRuleFactory(mailbox=mailbox, template=template)
    email_process(email_id=new_email(mailbox).pk)
    AutoReply.objects.update(status=AutoReplyStatus.SENDING, claimed_at=timezone.now() - timedelta(hours=1))
    assert auto_replies_due(mailbox_id=mailbox.pk) == []
    assert AutoReply.objects.get().status == AutoReplyStatus.SENDING


def test_marking_stale_sending_leaves_other_mailboxes_and_recent_claims(mailbox, template):
    other = MailboxFactory()
    for box in (mailbox, other):
        AutoResponseRuleFactory(mailbox=box, template=template)
        email_process(email_id=new_email(box, message_id=f"<q-{box.pk}@customer.example>").pk)
    hour_ago, minute_ago = timezone.now() - timedelta(hours=1), timezone.now() - timedelta(minutes=1)
    AutoReply.objects.update(status=AutoReplyStatus.SENDING, claimed_at=hour_ago)
    recent = AutoReplyFactory(
        email=new_email(mailbox, message_id="<recent@customer.example>"),
        status=AutoReplyStatus.SENDING,
        claimed_at=minute_ago,
    )
    assert auto_replies_mark_stale_sending(mailbox_id=mailbox.pk) == 1
    statuses = dict(AutoReply.objects.values_list("email__mailbox_id", "status").exclude(pk=recent.pk))
    assert statuses == {mailbox.pk: AutoReplyStatus.UNCERTAIN, other.pk: AutoReplyStatus.SENDING}
    recent.refresh_from_db()
    assert recent.status == AutoReplyStatus.SENDING


@pytest.mark.parametrize("data_timeout", [600, 1800])
def test_a_send_still_waiting_for_the_final_reply_is_not_marked_uncertain(settings, mailbox, data_timeout):
    """A live send may wait MAILHUB_SMTP_DATA_TIMEOUT for the reply to the final dot: marking
    it 'uncertain' sooner would invite a resend by hand while the first copy may still go out."""
    settings.MAILHUB_SMTP_DATA_TIMEOUT = data_timeout
    slow = timezone.now() - timedelta(seconds=data_timeout + 60)
    reply = AutoReplyFactory(
        email=new_email(mailbox, message_id="<slow@customer.example>"),
        status=AutoReplyStatus.SENDING,
        claimed_at=slow,
    )
    assert auto_replies_mark_stale_sending(mailbox_id=mailbox.pk) == 0
    reply.refresh_from_db()
    assert reply.status == AutoReplyStatus.SENDING


def test_subject_with_crlf_cannot_inject_a_header(mailbox, smtp_server):
    template = EmailTemplateFactory(subject="Re: {{ email.subject }}", text_body="ok")
    AutoResponseRuleFactory(mailbox=mailbox, template=template)
    process_and_send(new_email(mailbox, subject="Hello\r\nBcc: victim@evil.example\r\nX-Evil: 1"))
    [received] = smtp_server.wait_for(1)
    assert list(received.rcpt_tos) == ["ann@customer.example"]
    assert received.message["Bcc"] is None
    assert received.message["X-Evil"] is None
    assert "\n" not in received.message["Subject"]
    assert received.message["Subject"].startswith("Re: Hello")


def test_html_template_escapes_the_subject(mailbox, smtp_server):
    template = EmailTemplateFactory(
        subject="Re: {{ email.subject }}",
        text_body="{{ email.subject }}",
        html_body="<p>{{ email.subject }}</p>",
    )
    AutoResponseRuleFactory(mailbox=mailbox, template=template)
    process_and_send(new_email(mailbox, subject="<script>alert(1)</script>"))
    [received] = smtp_server.wait_for(1)
    html = received.message.get_body(("html",)).get_content()
    text = received.message.get_body(("plain",)).get_content()
    assert "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>" in html
    assert "<script>" not in html
    assert text.strip() == "<script>alert(1)</script>"


@pytest.mark.parametrize(
    "payload",
    ["{{ ''.__class__.__mro__ }}", "{{ email.__class__ }}", "{{ cycler.__init__.__globals__ }}"],
)
def test_sandbox_escape_at_render_fails_safely(mailbox, smtp_server, payload):
    template = EmailTemplateFactory(subject="Re", text_body=payload)  # saved around admin validation
    AutoResponseRuleFactory(mailbox=mailbox, template=template)
    assert process_and_send(new_email(mailbox)) == []
    reply = AutoReply.objects.get()
    assert reply.status == AutoReplyStatus.FAILED
    assert reply.reason.startswith(f"template {template.name!r}")
    assert smtp_server.messages == []


def test_history_gets_no_auto_response(mailbox, template, smtp_server):
    AutoResponseRuleFactory(mailbox=mailbox, template=template)
    email = new_email(mailbox, is_history=True, processing_status="skipped")
    assert email_process(email_id=email.pk).auto_reply_ids == ()
    assert AutoReply.objects.count() == 0


# --------------------------------------------------------------------------- backscatter


VICTIM_SPELLINGS = [
    "victim@target.example",
    "Victim@Target.Example",
    "victim+1@target.example",
    "VICTIM+2@target.example",
    "victim@target.example.",
]


def test_rotating_from_with_one_reply_to_victim_gets_one_reply_at_the_server(mailbox, template, smtp_server):
    AutoResponseRuleFactory(mailbox=mailbox, template=template)
    for number in range(25):
        spelling = VICTIM_SPELLINGS[number % len(VICTIM_SPELLINGS)]
        process_and_send(
            new_email(
                mailbox,
                from_address=f"attacker{number}@evil{number}.example",
                reply_to=[["Victim", spelling]],
                message_id=f"<spam{number}@evil.example>",
                subject=f"Buy now {number}",
            )
        )
    [received] = smtp_server.wait_for(1)
    assert list(received.rcpt_tos) == ["victim@target.example"]
    assert len(smtp_server.messages) == 1
    statuses = list(AutoReply.objects.order_by("pk").values_list("status", flat=True))
    assert statuses == [AutoReplyStatus.SENT] + [AutoReplyStatus.SUPPRESSED] * 24
    reasons = set(
        AutoReply.objects.filter(status=AutoReplyStatus.SUPPRESSED).values_list("reason", flat=True)
    )
    assert {reason.split(":")[0] for reason in reasons} == {"rate limit"}
    assert set(AutoReply.objects.values_list("recipient_key", flat=True)) == {"victim@target.example"}


def test_hourly_cap_suppresses_beyond_the_cap_with_the_reason(mailbox, template, smtp_server):
    mailbox.auto_reply_hourly_cap = 3
    mailbox.save()
    AutoResponseRuleFactory(mailbox=mailbox, template=template)
    for number in range(5):
        process_and_send(
            new_email(mailbox, from_address=f"person{number}@customer.example", message_id=f"<c{number}@x>")
        )
    assert len(smtp_server.wait_for(3)) == 3
    assert len(smtp_server.messages) == 3
    suppressed = AutoReply.objects.filter(status=AutoReplyStatus.SUPPRESSED)
    assert (
        list(suppressed.values_list("reason", flat=True))
        == ["hourly cap of 3 auto-replies reached for this mailbox"] * 2
    )


def test_hourly_cap_counts_only_the_last_hour(mailbox, template, smtp_server):
    mailbox.auto_reply_hourly_cap = 1
    mailbox.save()
    AutoResponseRuleFactory(mailbox=mailbox, template=template)
    process_and_send(new_email(mailbox, from_address="first@customer.example", message_id="<h1@x>"))
    AutoReply.objects.update(created_at=timezone.now() - timedelta(minutes=61))
    [reply] = process_and_send(
        new_email(mailbox, from_address="second@customer.example", message_id="<h2@x>")
    )
    assert reply.status == AutoReplyStatus.SENT
    assert len(smtp_server.wait_for(2)) == 2


def test_hourly_cap_zero_means_no_auto_replies(mailbox, template, smtp_server):
    mailbox.auto_reply_hourly_cap = 0
    mailbox.save()
    AutoResponseRuleFactory(mailbox=mailbox, template=template)
    assert process_and_send(new_email(mailbox)) == []
    assert AutoReply.objects.get().reason == "hourly cap of 0 auto-replies reached for this mailbox"
    assert smtp_server.messages == []


def test_encoded_reply_to_name_cannot_route_the_reply_to_our_own_mailbox(mailbox, template, smtp_server):
    # Reply-To: =?utf-8?q?ann=40customer.example?= <sales@acme.example>, as the parser stores it.
    MailboxFactory(email="sales@acme.example")
    AutoResponseRuleFactory(mailbox=mailbox, template=template)
    email = new_email(
        mailbox,
        reply_to=[["ann@customer.example", "sales@acme.example"]],
        headers=[
            ["From", "Ann Customer <ann@customer.example>"],
            ["Reply-To", "ann@customer.example <sales@acme.example>"],
            ["Subject", "Printer broken"],
        ],
    )
    assert process_and_send(email) == []
    reply = AutoReply.objects.get()
    assert (reply.status, reply.reason, reply.recipient) == (
        AutoReplyStatus.SUPPRESSED,
        "Reply-To is one of our own mailboxes",
        "sales@acme.example",
    )
    assert smtp_server.messages == []


def test_a_timed_out_regex_condition_is_recorded_and_not_answered(
    mailbox, template, smtp_server, monkeypatch
):
    from autoresponse import safe_regex

    class TimesOut:
        def search(self, text, timeout):
            raise TimeoutError

    monkeypatch.setattr(safe_regex, "_compile", lambda pattern: TimesOut())
    rule = AutoResponseRuleFactory(mailbox=mailbox, template=template)
    RuleConditionFactory(rule=rule, field="subject", operator="regex", value="(a+)+$")
    assert process_and_send(new_email(mailbox)) == []
    reply = AutoReply.objects.get()
    assert (reply.status, reply.reason) == (
        AutoReplyStatus.SUPPRESSED,
        "condition timed out: a regular expression took too long",
    )
    assert smtp_server.messages == []
