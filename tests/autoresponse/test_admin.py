import pytest
from django.urls import reverse

from autoresponse.models import AutoReplyStatus, EmailTemplate, RuleCondition
from mailhub import tasks
from tests.factories import AutoReplyFactory, AutoResponseRuleFactory, EmailTemplateFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(is_superuser=True, is_staff=True))
    return client


def template_data(**overrides):
    data = {"name": "ack", "subject": "Re: {{ email.subject }}", "text_body": "Thanks", "html_body": ""}
    data.update(overrides)
    return data


def test_valid_template_is_saved_and_previewed(admin_client):
    response = admin_client.post(
        reverse("admin:autoresponse_emailtemplate_add"),
        template_data(
            text_body="Hello {{ email.sender_name }}, {% if case %}{{ case.reference }}{% endif %}"
        ),
    )
    assert response.status_code == 302
    template = EmailTemplate.objects.get()
    page = admin_client.get(reverse("admin:autoresponse_emailtemplate_change", args=[template.pk]))
    assert "Preview (rendered against a sample email)" in page.content.decode()
    assert "Re: " in page.content.decode()


@pytest.mark.parametrize(
    ("field", "source", "expected"),
    [
        ("text_body", "line one\n{{ email.subject ", "line 2"),
        ("text_body", "Hi {{ customer }}", "customer"),
        ("subject", "{{ email.subjetc }}", "subjetc"),
        ("text_body", "{{ ''.__class__.__mro__ }}", ""),
        ("html_body", "<p>{% for x in %}</p>", "line 1"),
    ],
)
def test_invalid_template_is_refused_with_the_reason(admin_client, field, source, expected):
    response = admin_client.post(
        reverse("admin:autoresponse_emailtemplate_add"), template_data(**{field: source})
    )
    assert response.status_code == 200
    assert EmailTemplate.objects.count() == 0
    errors = response.context["adminform"].form.errors
    assert field in errors
    assert expected in errors[field][0]


def condition_formset(rule, **condition):
    data = {
        "mailbox": rule.mailbox.pk,
        "name": rule.name,
        "is_active": "on",
        "order": 0,
        "match": "all",
        "template": rule.template.pk,
        "conditions-TOTAL_FORMS": "1",
        "conditions-INITIAL_FORMS": "0",
        "conditions-MIN_NUM_FORMS": "0",
        "conditions-MAX_NUM_FORMS": "1000",
    }
    data.update({f"conditions-0-{key}": value for key, value in condition.items()})
    return data


@pytest.mark.parametrize(
    ("condition", "saved"),
    [
        ({"field": "subject", "operator": "regex", "value": r"^order \d+$"}, True),
        ({"field": "subject", "operator": "regex", "value": "(unclosed"}, False),
        ({"field": "subject", "operator": "regex", "value": "(a+)+$"}, False),
        ({"field": "header", "operator": "contains", "value": "x", "header_name": ""}, False),
        ({"field": "header", "operator": "equals", "value": "yes", "header_name": "X-Priority"}, True),
    ],
)
def test_conditions_are_validated_at_save_time(admin_client, condition, saved):
    rule = AutoResponseRuleFactory()
    url = reverse("admin:autoresponse_autoresponserule_change", args=[rule.pk])
    response = admin_client.post(url, condition_formset(rule, **condition))
    assert response.status_code == (302 if saved else 200)
    assert RuleCondition.objects.count() == (1 if saved else 0)


def test_template_admin_lists_templates(admin_client):
    EmailTemplateFactory(name="welcome")
    page = admin_client.get(reverse("admin:autoresponse_emailtemplate_changelist"))
    assert "welcome" in page.content.decode()


def test_resend_by_hand_enqueues_each_selected_reply_once_after_commit(
    admin_client, monkeypatch, django_capture_on_commit_callbacks
):
    message = "From: support@acme.example\r\nTo: ann@customer.example\r\nSubject: Re\r\n\r\nhi\r\n"
    replies = [
        AutoReplyFactory(status=status, rendered_message=message)
        for status in (AutoReplyStatus.UNCERTAIN, AutoReplyStatus.FAILED)
    ]
    enqueued = []
    monkeypatch.setattr(tasks.send_auto_reply, "delay", enqueued.append)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        admin_client.post(
            reverse("admin:autoresponse_autoreply_changelist"),
            {"action": "resend_by_hand", "_selected_action": [reply.pk for reply in replies]},
        )
    assert enqueued == []  # nothing is sent before the rows are committed as pending
    for callback in callbacks:
        callback()
    assert sorted(enqueued) == sorted(reply.pk for reply in replies)
