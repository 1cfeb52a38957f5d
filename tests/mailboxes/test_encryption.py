import io
import json
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet

from mailboxes.encryption import SecretDecryptionError, decrypt_secret, encrypt_secret, rotate_secret
from mailboxes.models import Mailbox
from tests.factories import MailboxFactory


def test_round_trip_and_empty(settings):
    assert decrypt_secret(encrypt_secret("pässword")) == "pässword"
    assert encrypt_secret("") == ""
    assert decrypt_secret("") == ""


def test_plaintext_in_the_column_is_refused():
    with pytest.raises(SecretDecryptionError):
        decrypt_secret("not-encrypted")


def test_key_rotation_keeps_secrets_readable(settings):
    old_key = settings.MAILHUB_ENCRYPTION_KEYS[0]
    stored = encrypt_secret("s3cret")
    new_key = Fernet.generate_key().decode()
    settings.MAILHUB_ENCRYPTION_KEYS = [new_key, old_key]
    assert decrypt_secret(stored) == "s3cret"  # old ciphertext still readable during rotation
    rotated = rotate_secret(stored)
    settings.MAILHUB_ENCRYPTION_KEYS = [new_key]  # old key dropped after rotation
    assert decrypt_secret(rotated) == "s3cret"
    with pytest.raises(SecretDecryptionError):
        decrypt_secret(stored)


@pytest.mark.django_db
def test_rotate_command_reencrypts_every_mailbox(settings):
    from django.core.management import call_command

    old_key = settings.MAILHUB_ENCRYPTION_KEYS[0]
    MailboxFactory(imap_password="one", smtp_password="two")
    settings.MAILHUB_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), old_key]
    call_command("rotate_mailbox_secrets")
    settings.MAILHUB_ENCRYPTION_KEYS = settings.MAILHUB_ENCRYPTION_KEYS[:1]
    mailbox = Mailbox.objects.get()
    assert (mailbox.imap_password.reveal(), mailbox.smtp_password.reveal()) == ("one", "two")


@pytest.mark.django_db
def test_rotate_command_reencrypts_every_oauth2_secret_and_token(settings):
    from django.core.management import call_command

    from mailboxes.oauth_models import OAuthGrant

    old_key = settings.MAILHUB_ENCRYPTION_KEYS[0]
    mailbox = MailboxFactory(label="Shared")
    OAuthGrant.objects.create(
        mailbox=mailbox,
        provider="generic",
        token_endpoint="http://127.0.0.1:9/token",
        client_id="id",
        client_secret="client-secret",
        access_token="access-token",
        refresh_token="refresh-token",
    )
    settings.MAILHUB_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), old_key]
    out = io.StringIO()
    call_command("rotate_mailbox_secrets", stdout=out)
    assert out.getvalue() == "Re-encrypted the secrets of 1 OAuth2 connections, 1 mailboxes.\n"
    settings.MAILHUB_ENCRYPTION_KEYS = settings.MAILHUB_ENCRYPTION_KEYS[:1]
    grant = OAuthGrant.objects.get()
    assert (grant.client_secret.reveal(), grant.access_token.reveal(), grant.refresh_token.reveal()) == (
        "client-secret",
        "access-token",
        "refresh-token",
    )


def test_rotate_command_covers_every_encrypted_field_of_every_model():
    """The family: a secret field added to any model later is rotated without touching the command."""
    from mailboxes.management.commands.rotate_mailbox_secrets import encrypted_fields

    found = {model._meta.label: names for model, names in encrypted_fields()}
    assert found == {
        "mailboxes.Mailbox": ("imap_password", "smtp_password"),
        "mailboxes.OAuthGrant": ("client_secret", "access_token", "refresh_token"),
    }


@pytest.mark.django_db
def test_rotate_command_refuses_an_oauth2_token_it_cannot_read(settings):
    from django.core.management import CommandError, call_command

    from mailboxes.oauth_models import OAuthGrant

    mailbox = MailboxFactory(label="Shared", imap_password="one")
    OAuthGrant.objects.create(mailbox=mailbox, refresh_token="refresh-token", tenant="contoso.test")
    settings.MAILHUB_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    Mailbox.objects.filter(pk=mailbox.pk).update(imap_password="", smtp_password="")
    with pytest.raises(
        CommandError, match=r"^OAuth2 connection \d+ \(mailbox Shared\): refresh_token can't be decrypted"
    ):
        call_command("rotate_mailbox_secrets")


# -- a removed key: only the mailbox's own polls and sends fail ----------------------------------


@pytest.fixture
def unreadable_mailbox(settings):
    """A mailbox whose secrets were encrypted with a key that is no longer configured."""
    mailbox = MailboxFactory(
        label="Orphaned", imap_host="127.0.0.1", imap_port=9, imap_password="one", smtp_password="two"
    )
    settings.MAILHUB_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    return mailbox


@pytest.mark.django_db
def test_loading_never_decrypts_and_the_settings_builders_name_the_reason(unreadable_mailbox):
    from mailboxes.models import IMAP_KEY_MISSING_ERROR, SMTP_KEY_MISSING_ERROR

    mailbox = Mailbox.objects.get(pk=unreadable_mailbox.pk)  # raised before: decrypt on load
    assert [m.label for m in Mailbox.objects.all()] == ["Orphaned"]
    with pytest.raises(SecretDecryptionError, match=f"^{IMAP_KEY_MISSING_ERROR}$"):
        mailbox.imap_settings()
    with pytest.raises(SecretDecryptionError, match=f"^{SMTP_KEY_MISSING_ERROR}$"):
        mailbox.smtp_settings()


@pytest.mark.django_db
def test_poll_with_a_removed_key_records_a_permanent_error_with_backoff(unreadable_mailbox):
    from mailboxes.models import IMAP_KEY_MISSING_ERROR
    from mailboxes.services import mailbox_poll

    result = mailbox_poll(mailbox_id=unreadable_mailbox.pk)
    assert (result.error, result.error_is_permanent) == (IMAP_KEY_MISSING_ERROR, True)
    mailbox = Mailbox.objects.get(pk=unreadable_mailbox.pk)
    assert (mailbox.last_error, mailbox.consecutive_failures) == (IMAP_KEY_MISSING_ERROR, 1)
    assert mailbox.next_poll_at - mailbox.last_polled_at >= timedelta(seconds=0.8 * mailbox.poll_interval)
    assert mailbox.poll_lease_token == ""


@pytest.mark.django_db
def test_mailhub_status_shows_a_mailbox_with_a_removed_key(unreadable_mailbox):
    from io import StringIO

    from django.core.management import CommandError, call_command

    mailbox_poll_failed(unreadable_mailbox)
    out = StringIO()
    with pytest.raises(CommandError, match=r"1 mailbox\(es\) need attention: Orphaned \(failing\)"):
        call_command("mailhub_status", "--json", stdout=out)
    document = json.loads(out.getvalue())
    assert [(m["label"], m["state"], m["last_error"]) for m in document["mailboxes"]] == [
        (
            "Orphaned",
            "failing",
            "IMAP password can't be decrypted with MAILHUB_ENCRYPTION_KEYS: enter it again in the admin",
        )
    ]


@pytest.mark.django_db
def test_processing_an_email_of_a_mailbox_with_a_removed_key_works(unreadable_mailbox):
    from processing.services import email_convert_to_case
    from tests.factories import EmailFactory

    email = EmailFactory(mailbox=unreadable_mailbox)
    case = email_convert_to_case(email_id=email.pk)
    assert case.mailbox_id == unreadable_mailbox.pk


@pytest.mark.django_db
def test_admin_pages_work_with_a_removed_key_and_a_new_password_fixes_it(client, unreadable_mailbox):
    from django.urls import reverse

    from tests.factories import UserFactory
    from tests.mailboxes.test_admin import _mailbox_form_data

    mailbox_poll_failed(unreadable_mailbox)
    client.force_login(UserFactory(is_superuser=True, is_staff=True))
    changelist = client.get(reverse("admin:mailboxes_mailbox_changelist"))
    assert changelist.status_code == 200
    assert "IMAP password can&#x27;t be decrypted" in changelist.content.decode()
    url = reverse("admin:mailboxes_mailbox_change", args=[unreadable_mailbox.pk])
    assert client.get(url).status_code == 200
    response = client.post(url, _mailbox_form_data(unreadable_mailbox, imap_password="new-one"))
    assert response.status_code == 302
    mailbox = Mailbox.objects.get(pk=unreadable_mailbox.pk)
    assert mailbox.imap_settings().password == "new-one"
    assert mailbox.next_poll_at is None  # polled at the next dispatch, not after the backoff


@pytest.mark.django_db
def test_rotate_command_refuses_a_secret_it_cannot_read(unreadable_mailbox):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match=r"\(Orphaned\): imap_password can't be decrypted"):
        call_command("rotate_mailbox_secrets")


def mailbox_poll_failed(mailbox) -> None:
    from mailboxes.services import mailbox_poll

    assert mailbox_poll(mailbox_id=mailbox.pk).error


@pytest.mark.django_db
def test_dumpdata_writes_ciphertext_and_loaddata_restores_a_working_password(tmp_path):
    from django.core.management import call_command

    mailbox = MailboxFactory(imap_password="Grüße-imap", smtp_password="smtp-secret")
    dump = tmp_path / "mailboxes.json"
    call_command("dumpdata", "mailboxes.mailbox", output=str(dump))
    text = dump.read_text()
    assert "Grüße-imap" not in text
    assert "smtp-secret" not in text
    assert "StoredSecret" not in text
    assert '"imap_password": "fernet:' in text
    Mailbox.objects.all().delete()
    call_command("loaddata", str(dump))
    restored = Mailbox.objects.get(pk=mailbox.pk)
    assert restored.imap_settings().password == "Grüße-imap"
    assert restored.smtp_settings().password == "smtp-secret"


@pytest.mark.django_db
def test_the_admin_refuses_a_password_in_the_ciphertext_format(admin_client):
    mailbox = MailboxFactory()
    data = {
        field: getattr(mailbox, field)
        for field in (
            "label",
            "email",
            "imap_host",
            "imap_port",
            "imap_security",
            "imap_username",
            "imap_folder",
            "smtp_host",
            "smtp_port",
            "smtp_security",
            "smtp_username",
            "processing_action",
            "poll_interval",
            "history_import",
        )
    }
    data |= {"imap_password": "fernet:looks-like-ciphertext", "is_active": "on"}
    data |= {key: value for key, value in _rule_inline_management().items()}
    response = admin_client.post(f"/admin/mailboxes/mailbox/{mailbox.pk}/change/", data)
    assert response.status_code == 200
    assert "can&#x27;t start with" in response.content.decode()


def _rule_inline_management() -> dict:
    return {
        f"{prefix}-{name}": "0"
        for prefix in ("auto_response_rules", "oauth_grants")
        for name in ("TOTAL_FORMS", "INITIAL_FORMS")
    } | {"imap_auth": "password", "smtp_auth": "password"}
