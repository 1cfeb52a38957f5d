import pytest
from django.urls import reverse

from mailboxes.models import Mailbox
from mailboxes.oauth_models import AuthMethod, GrantStatus, OAuthGrant
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


@pytest.mark.parametrize(("secret", "field", "value"), SERVER_CHANGES)
def test_changing_the_server_of_an_oauth2_login_needs_no_password_and_forgets_the_old_one(
    superuser_client, secret, field, value
):
    """The whole family of server fields, for both protocols: with OAuth2 no password is used, so
    none is asked for; the stored one (entered for the old server) is dropped, so that switching
    back to the password later can't send it to the new server."""
    auth = secret.replace("_password", "_auth")
    other = "smtp_password" if secret == "imap_password" else "imap_password"
    mailbox = _mailbox_with_secrets()
    Mailbox.objects.filter(pk=mailbox.pk).update(**{auth: AuthMethod.OAUTH2})
    mailbox.refresh_from_db()
    url = reverse("admin:mailboxes_mailbox_change", args=[mailbox.pk])
    data = _mailbox_form_data(mailbox, **{"smtp_username": mailbox.smtp_username, field: value})
    response = superuser_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    reloaded = Mailbox.objects.get(pk=mailbox.pk)
    assert (getattr(reloaded, field), bool(getattr(reloaded, secret))) == (value, False)
    assert getattr(reloaded, other).reveal() == getattr(mailbox, other).reveal()  # untouched

    # Back to the password on the new server: the old password is gone, nothing to leak.
    response = superuser_client.post(
        url, _mailbox_form_data(reloaded, **{"smtp_username": reloaded.smtp_username, auth: "password"})
    )
    assert response.status_code == 302
    assert not getattr(Mailbox.objects.get(pk=mailbox.pk), secret)


def test_switching_to_oauth2_and_the_server_at_once_needs_no_password(superuser_client):
    mailbox = _mailbox_with_secrets()
    url = reverse("admin:mailboxes_mailbox_change", args=[mailbox.pk])
    data = _mailbox_form_data(
        mailbox,
        smtp_username=mailbox.smtp_username,
        imap_host="outlook.office365.com",
        imap_auth=AuthMethod.OAUTH2,
    )
    assert superuser_client.post(url, data).status_code == 302
    reloaded = Mailbox.objects.get(pk=mailbox.pk)
    assert (reloaded.imap_host, reloaded.imap_auth, bool(reloaded.imap_password)) == (
        "outlook.office365.com",
        AuthMethod.OAUTH2,
        False,
    )


def _oauth_grant_form(**fields) -> dict:
    data = {
        "oauth_grants-TOTAL_FORMS": "1",
        "oauth_grants-0-purpose": "shared",
        "oauth_grants-0-provider": "generic",
        "oauth_grants-0-flow": "authorization_code",
        "oauth_grants-0-authorization_endpoint": "http://127.0.0.1:9/authorize",
        "oauth_grants-0-token_endpoint": "http://127.0.0.1:9/token",
        "oauth_grants-0-client_id": "mailhub",
    }
    data.update({f"oauth_grants-0-{name}": value for name, value in fields.items()})
    return data


def _saved_messages(client, mailbox, **overrides) -> list[str]:
    url = reverse("admin:mailboxes_mailbox_change", args=[mailbox.pk])
    response = client.post(url, _mailbox_form_data(mailbox, **overrides), follow=True)
    assert response.redirect_chain, response.context["adminform"].form.errors
    return [str(m) for m in response.context["messages"] if m.level_tag == "warning"]


def test_saving_an_oauth2_mailbox_without_an_oauth2_connection_warns(superuser_client):
    mailbox = MailboxFactory(label="Shared", imap_password="", smtp_password="")
    assert _saved_messages(superuser_client, mailbox, imap_auth="oauth2", smtp_auth="oauth2") == [
        f"Shared: {protocol} authentication is OAuth2 but no OAuth2 connection serves {protocol}: add "
        f'one on the mailbox page (for "IMAP and SMTP" or "{protocol} only"), save, then press Connect. '
        "Until then every login fails."
        for protocol in ("IMAP", "SMTP")
    ]
    assert _saved_messages(superuser_client, mailbox, imap_auth="password", smtp_auth="password") == []


def test_a_connection_added_on_the_same_page_counts_and_only_connect_is_left(superuser_client):
    mailbox = MailboxFactory(label="Shared", imap_password="")
    warnings = _saved_messages(superuser_client, mailbox, imap_auth="oauth2", **_oauth_grant_form())
    assert warnings == [
        "Shared: IMAP authentication is OAuth2 and its connection is not connected yet: press Connect "
        "on the mailbox page."
    ]
    assert OAuthGrant.objects.filter(mailbox=mailbox).count() == 1


def test_an_smtp_only_connection_does_not_serve_imap(superuser_client):
    mailbox = MailboxFactory(label="Shared", imap_password="")
    OAuthGrant.objects.create(
        mailbox=mailbox, purpose="smtp", provider="google", status=GrantStatus.CONNECTED
    )
    warnings = _saved_messages(superuser_client, mailbox, imap_auth="oauth2", smtp_auth="oauth2")
    assert [w.split(":")[1].strip() for w in warnings] == [
        "IMAP authentication is OAuth2 but no OAuth2 connection serves IMAP"
    ]


def test_changing_the_server_of_a_mailbox_without_stored_password_needs_none(superuser_client):
    mailbox = MailboxFactory(imap_password="", smtp_host="", smtp_password="")
    url = reverse("admin:mailboxes_mailbox_change", args=[mailbox.pk])
    response = superuser_client.post(
        url, _mailbox_form_data(mailbox, imap_host="imap.new.example", smtp_host="smtp.new.example")
    )
    assert response.status_code == 302
    reloaded = Mailbox.objects.get(pk=mailbox.pk)
    assert (reloaded.imap_host, bool(reloaded.imap_password)) == ("imap.new.example", False)
