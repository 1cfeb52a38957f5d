import pytest
from django.urls import reverse

from mailboxes.models import Mailbox
from tests.factories import (
    AttachmentFactory,
    AutoReplyFactory,
    AutoResponseRuleFactory,
    CaseFactory,
    EmailFactory,
    EmailTemplateFactory,
    LeadFactory,
    MailboxFactory,
    RuleConditionFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

ADMIN_MODELS = [
    ("mailboxes", "mailbox", MailboxFactory, True),
    ("mailboxes", "email", EmailFactory, False),
    ("mailboxes", "attachment", AttachmentFactory, False),
    ("processing", "lead", LeadFactory, True),
    ("processing", "case", CaseFactory, True),
    ("autoresponse", "autoresponserule", AutoResponseRuleFactory, True),
    ("autoresponse", "emailtemplate", EmailTemplateFactory, True),
    ("autoresponse", "autoreply", AutoReplyFactory, False),
]


@pytest.fixture
def superuser_client(client):
    client.force_login(UserFactory(is_superuser=True, is_staff=True))
    return client


@pytest.mark.parametrize(("app", "model", "factory", "can_add"), ADMIN_MODELS)
def test_admin_pages_render_for_superuser(superuser_client, app, model, factory, can_add):
    obj = factory()
    if model == "autoresponserule":
        RuleConditionFactory(rule=obj)
    changelist = superuser_client.get(reverse(f"admin:{app}_{model}_changelist"))
    assert changelist.status_code == 200
    assert reverse(f"admin:{app}_{model}_change", args=[obj.pk]) in changelist.content.decode()
    searched = superuser_client.get(reverse(f"admin:{app}_{model}_changelist"), {"q": "x"})
    assert searched.status_code == 200
    change = superuser_client.get(reverse(f"admin:{app}_{model}_change", args=[obj.pk]))
    assert change.status_code == 200
    add = superuser_client.get(reverse(f"admin:{app}_{model}_add"))
    assert add.status_code == (200 if can_add else 403)


@pytest.mark.parametrize(("app", "model", "factory", "can_add"), ADMIN_MODELS)
def test_admin_refuses_non_staff(client, app, model, factory, can_add):
    obj = factory()
    client.force_login(UserFactory(is_staff=False))
    for url in (
        reverse(f"admin:{app}_{model}_changelist"),
        reverse(f"admin:{app}_{model}_change", args=[obj.pk]),
        reverse(f"admin:{app}_{model}_add"),
    ):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def _mailbox_form_data(mailbox: Mailbox, **overrides) -> dict:
    data = {
        "label": mailbox.label,
        "email": mailbox.email,
        "is_active": "on",
        "imap_host": mailbox.imap_host,
        "imap_port": mailbox.imap_port,
        "imap_security": mailbox.imap_security,
        "imap_username": mailbox.imap_username,
        "imap_password": "",
        "imap_folder": "INBOX",
        "poll_interval": 60,
        "history_import": "all",
        "smtp_host": mailbox.smtp_host,
        "smtp_port": mailbox.smtp_port,
        "smtp_security": mailbox.smtp_security,
        "smtp_username": "",
        "smtp_password": "",
        "processing_action": "none",
        "default_case_status": "open",
        "default_case_priority": "normal",
        "lead_join_open_lead": "on",
        "auto_response_rules-TOTAL_FORMS": "0",
        "auto_response_rules-INITIAL_FORMS": "0",
        "auto_response_rules-MIN_NUM_FORMS": "0",
        "auto_response_rules-MAX_NUM_FORMS": "1000",
        "imap_auth": mailbox.imap_auth,
        "smtp_auth": mailbox.smtp_auth,
        "oauth_grants-TOTAL_FORMS": "0",
        "oauth_grants-INITIAL_FORMS": "0",
    }
    data.update(overrides)
    return data


def test_secrets_are_write_only_in_the_admin_form(superuser_client):
    mailbox = MailboxFactory(imap_password="imap-old-secret", smtp_password="smtp-old-secret")
    url = reverse("admin:mailboxes_mailbox_change", args=[mailbox.pk])
    page = superuser_client.get(url).content.decode()
    assert "imap-old-secret" not in page
    assert "smtp-old-secret" not in page
    assert mailbox.imap_password.stored() not in page

    # Blank keeps the stored secrets.
    response = superuser_client.post(url, _mailbox_form_data(mailbox, label="Renamed"))
    assert response.status_code == 302, response.content.decode()[:3000]
    mailbox.refresh_from_db()
    assert (mailbox.label, mailbox.imap_password.reveal(), mailbox.smtp_password.reveal()) == (
        "Renamed",
        "imap-old-secret",
        "smtp-old-secret",
    )

    # A typed value replaces it.
    response = superuser_client.post(url, _mailbox_form_data(mailbox, imap_password="imap-new"))
    assert response.status_code == 302
    mailbox.refresh_from_db()
    assert (mailbox.imap_password.reveal(), mailbox.smtp_password.reveal()) == ("imap-new", "smtp-old-secret")


def test_history_since_requires_a_date(superuser_client):
    mailbox = MailboxFactory()
    url = reverse("admin:mailboxes_mailbox_change", args=[mailbox.pk])
    response = superuser_client.post(url, _mailbox_form_data(mailbox, history_import="since"))
    assert response.status_code == 200
    assert "Give the date from which existing messages are imported." in response.content.decode()


@pytest.mark.integration
def test_test_connection_action_reports_success(superuser_client, imap_account, smtp_server):
    from django.contrib.messages import get_messages

    imap_account.append(b"Subject: hi\r\n\r\nbody\r\n")
    mailbox = MailboxFactory.on_dovecot(
        imap_account,
        label="Support",
        smtp_host=smtp_server.host,
        smtp_port=smtp_server.port,
    )
    response = superuser_client.post(
        reverse("admin:mailboxes_mailbox_changelist"),
        {"action": "test_connection", "_selected_action": [mailbox.pk]},
        follow=True,
    )
    messages = [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]
    assert messages[0][0] == "success"
    assert messages[0][1].startswith(
        f"Support: IMAP OK: logged in to 127.0.0.1:{imap_account.port} as {imap_account.username!r}, "
        "folder 'INBOX' has 1 message(s)"
    )
    assert messages[1] == (
        "success",
        f"Support: SMTP OK: connected to 127.0.0.1:{smtp_server.port} (no login), NOOP answered 250.",
    )


@pytest.mark.integration
def test_test_connection_action_reports_wrong_password_exactly(
    superuser_client, imap_account, smtp_auth_server
):
    from django.contrib.messages import get_messages

    mailbox = MailboxFactory.on_dovecot(
        imap_account,
        label="Support",
        imap_password="wrong-password",
        smtp_host=smtp_auth_server.host,
        smtp_port=smtp_auth_server.port,
        smtp_username="smtp-user",
        smtp_password="wrong-too",
    )
    response = superuser_client.post(
        reverse("admin:mailboxes_mailbox_changelist"),
        {"action": "test_connection", "_selected_action": [mailbox.pk]},
        follow=True,
    )
    messages = [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]
    assert [level for level, _text in messages] == ["error", "error"]
    assert messages[0][1].startswith(
        f"Support: IMAP login failed for {imap_account.username!r} on 127.0.0.1:{imap_account.port}"
    )
    assert messages[1][1].startswith(
        f"Support: SMTP login failed for 'smtp-user' on 127.0.0.1:{smtp_auth_server.port}: 535"
    )
    assert "wrong-password" not in " ".join(text for _level, text in messages)


@pytest.mark.integration
def test_test_connection_reports_missing_folder(superuser_client, imap_account):
    from mailboxes.services import mailbox_test_connection

    mailbox = MailboxFactory.on_dovecot(
        imap_account,
        imap_folder="Archive",
        smtp_host="",
    )
    imap_check, smtp_check = mailbox_test_connection(mailbox=mailbox)
    assert (imap_check.ok, imap_check.message) == (
        False,
        f"IMAP folder 'Archive' does not exist for {imap_account.username!r}",
    )
    assert (smtp_check.ok, smtp_check.message) == (False, "SMTP is not configured (no host).")


SERVER_CHANGES = [
    ("imap_password", "imap_host", "attacker.example"),
    ("imap_password", "imap_port", 1143),
    ("imap_password", "imap_security", "ssl"),
    ("imap_password", "imap_username", "someone-else"),
    ("smtp_password", "smtp_host", "attacker.example"),
    ("smtp_password", "smtp_port", 2525),
    ("smtp_password", "smtp_security", "starttls"),
    ("smtp_password", "smtp_username", "someone-else"),
]


def _mailbox_with_secrets() -> Mailbox:
    return MailboxFactory(
        imap_host="imap.acme.example",
        imap_username="support",
        imap_password="imap-old-secret",
        smtp_host="smtp.acme.example",
        smtp_username="support",
        smtp_password="smtp-old-secret",
    )


@pytest.mark.parametrize(("secret", "field", "value"), SERVER_CHANGES)
def test_changing_the_server_with_a_blank_password_is_refused(superuser_client, secret, field, value):
    from mailhub.admin import SERVER_CHANGED

    mailbox = _mailbox_with_secrets()
    url = reverse("admin:mailboxes_mailbox_change", args=[mailbox.pk])
    data = _mailbox_form_data(mailbox, **{"smtp_username": mailbox.smtp_username, field: value})
    response = superuser_client.post(url, data)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {secret: [SERVER_CHANGED]}
    reloaded = Mailbox.objects.get(pk=mailbox.pk)
    assert getattr(reloaded, field) == getattr(mailbox, field)  # nothing saved


@pytest.mark.parametrize(("secret", "field", "value"), SERVER_CHANGES)
def test_changing_the_server_with_the_password_typed_again_is_saved(superuser_client, secret, field, value):
    mailbox = _mailbox_with_secrets()
    url = reverse("admin:mailboxes_mailbox_change", args=[mailbox.pk])
    data = _mailbox_form_data(
        mailbox, **{"smtp_username": mailbox.smtp_username, field: value, secret: "typed"}
    )
    response = superuser_client.post(url, data)
    assert response.status_code == 302
    reloaded = Mailbox.objects.get(pk=mailbox.pk)
    assert (getattr(reloaded, field), getattr(reloaded, secret).reveal()) == (value, "typed")


def test_changing_the_server_of_a_mailbox_without_stored_password_needs_none(superuser_client):
    mailbox = MailboxFactory(imap_password="", smtp_host="", smtp_password="")
    url = reverse("admin:mailboxes_mailbox_change", args=[mailbox.pk])
    response = superuser_client.post(
        url, _mailbox_form_data(mailbox, imap_host="imap.new.example", smtp_host="smtp.new.example")
    )
    assert response.status_code == 302
    reloaded = Mailbox.objects.get(pk=mailbox.pk)
    assert (reloaded.imap_host, bool(reloaded.imap_password)) == ("imap.new.example", False)
