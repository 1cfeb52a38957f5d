"""Authenticated encryption of mailbox secrets at rest (Fernet: AES-128-CBC + HMAC-SHA256).

Key rotation: MAILHUB_ENCRYPTION_KEYS lists keys newest first. MultiFernet encrypts with the first
and decrypts with any, so a new key is prepended, `manage.py rotate_mailbox_secrets` re-encrypts
every stored secret with it, and only then is the old key removed.
"""

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models

CIPHERTEXT_PREFIX = "fernet:"


class SecretDecryptionError(Exception):
    """The stored ciphertext can't be read with any configured key (key removed too early?)."""


@cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if keys:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    # Only reachable with DEBUG on (settings refuse to start otherwise): a key derived from the
    # development SECRET_KEY keeps a local setup working without one more variable.
    derived = base64.urlsafe_b64encode(hashlib.sha256(settings.SECRET_KEY.encode()).digest())
    return MultiFernet([Fernet(derived)])


def current_fernet() -> MultiFernet:
    return _fernet(tuple(settings.MAILHUB_ENCRYPTION_KEYS))


def encrypt_secret(plaintext: str) -> str:
    if plaintext == "":
        return ""
    return CIPHERTEXT_PREFIX + current_fernet().encrypt(plaintext.encode()).decode()


def decrypt_secret(stored: str) -> str:
    if not stored:
        return ""
    if not stored.startswith(CIPHERTEXT_PREFIX):
        raise SecretDecryptionError("stored secret is not encrypted")
    try:
        return current_fernet().decrypt(stored.removeprefix(CIPHERTEXT_PREFIX).encode()).decode()
    except InvalidToken as exc:
        raise SecretDecryptionError(
            "stored secret can't be decrypted with MAILHUB_ENCRYPTION_KEYS (was its key removed?)"
        ) from exc


def rotate_secret(stored: str) -> str:
    """Re-encrypt a stored secret with the newest key."""
    if not stored:
        return ""
    token = current_fernet().rotate(stored.removeprefix(CIPHERTEXT_PREFIX).encode())
    return CIPHERTEXT_PREFIX + token.decode()


class EncryptedTextField(models.TextField):
    """Python side: plaintext str. Database column: Fernet ciphertext only."""

    def from_db_value(self, value, expression, connection):
        if value is None:
            return value
        return decrypt_secret(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None:
            return value
        return encrypt_secret(value)
