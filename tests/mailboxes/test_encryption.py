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
    assert (mailbox.imap_password, mailbox.smtp_password) == ("one", "two")
