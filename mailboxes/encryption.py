"""Authenticated encryption of mailbox secrets at rest (Fernet: AES-128-CBC + HMAC-SHA256).

Loading never decrypts: a model field holds a `StoredSecret`, and only the code that needs the
plaintext (the IMAP/SMTP settings builders) asks for it with `reveal()`. So a secret whose key
was removed fails only where it is used, and every other query that loads the row keeps working.

Key rotation: MAILHUB_ENCRYPTION_KEYS lists keys newest first. MultiFernet encrypts with the first
and decrypts with any, so a new key is prepended, `manage.py rotate_mailbox_secrets` re-encrypts
every stored secret with it, and only then is the old key removed.
"""

from __future__ import annotations

import base64
import hashlib
from functools import cache
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models
from django.db.models.query_utils import DeferredAttribute

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
    try:
        token = current_fernet().rotate(stored.removeprefix(CIPHERTEXT_PREFIX).encode())
    except InvalidToken as exc:
        raise SecretDecryptionError(
            "stored secret can't be decrypted with MAILHUB_ENCRYPTION_KEYS (was its key removed?)"
        ) from exc
    return CIPHERTEXT_PREFIX + token.decode()


class StoredSecret:
    """A secret as a model instance holds it: ciphertext from the database, or a plaintext just
    assigned (by a form, a factory, a shell) that is encrypted when saved.

    A value object rather than a plain str so that (a) loading a row never needs a key, (b) no
    repr, str, template or traceback can show the plaintext, and (c) code that needs the secret
    says so with `reveal()`, which is easy to grep for.
    """

    __slots__ = ("_ciphertext", "_plaintext")

    def __init__(self, *, ciphertext: str | None = None, plaintext: str | None = None) -> None:
        if (ciphertext is None) == (plaintext is None):
            raise ValueError("StoredSecret takes exactly one of ciphertext and plaintext")
        self._ciphertext = ciphertext
        self._plaintext = plaintext

    @classmethod
    def from_db(cls, stored: str) -> StoredSecret:
        return cls(ciphertext=stored)

    @classmethod
    def from_plaintext(cls, plaintext: str) -> StoredSecret:
        return cls(plaintext=plaintext)

    def reveal(self) -> str:
        """The plaintext; raises SecretDecryptionError when no configured key opens it."""
        if self._plaintext is not None:
            return self._plaintext
        return decrypt_secret(self._ciphertext or "")

    def stored(self) -> str:
        """What goes into the column: the ciphertext as loaded, or the new plaintext encrypted."""
        if self._ciphertext is not None:
            return self._ciphertext
        return encrypt_secret(self._plaintext or "")

    def rotated(self) -> StoredSecret:
        """The same secret encrypted with the newest key (SecretDecryptionError if unreadable)."""
        if self._plaintext is not None:
            return self
        return StoredSecret(ciphertext=rotate_secret(self._ciphertext or ""))

    def __bool__(self) -> bool:
        return bool(self._ciphertext or self._plaintext)

    def __repr__(self) -> str:
        return f"<StoredSecret: {'set' if self else 'empty'}>"

    __str__ = __repr__


class _SecretDescriptor(DeferredAttribute):
    """Whatever is assigned (str or StoredSecret), the attribute always holds a StoredSecret."""

    field: EncryptedTextField

    def __set__(self, instance: models.Model, value: str | StoredSecret | None) -> None:
        instance.__dict__[self.field.attname] = self.field.to_python(value)


if TYPE_CHECKING:  # the stubs' Field is generic (set type, get type); the runtime class is not
    _SecretTextField = models.TextField[str | StoredSecret | None, StoredSecret]
else:
    _SecretTextField = models.TextField


class EncryptedTextField(_SecretTextField):
    """Python side: a StoredSecret (assign a plaintext str). Database column: Fernet ciphertext."""

    descriptor_class = _SecretDescriptor

    def from_db_value(self, value: str | None, expression: object, connection: object) -> StoredSecret | None:
        if value is None:
            return value
        return StoredSecret.from_db(value)

    def to_python(self, value: object) -> StoredSecret | None:
        # Never str(value): that would turn a StoredSecret into its repr and store that instead.
        if value is None or isinstance(value, StoredSecret):
            return value
        if isinstance(value, str):
            # A value in the column's own format is ciphertext (dumpdata writes it, loaddata
            # reads it back); the admin refuses passwords that look like it.
            if value.startswith(CIPHERTEXT_PREFIX):
                return StoredSecret.from_db(value)
            return StoredSecret.from_plaintext(value)
        raise TypeError(f"{self.name} takes a str or a StoredSecret, not {type(value).__name__}")

    def get_prep_value(self, value: object) -> str | None:
        secret = self.to_python(value)
        if secret is None:
            return secret
        return secret.stored()

    def value_to_string(self, obj: models.Model) -> str:
        """Serializers (dumpdata) write the ciphertext, never the plaintext nor the repr."""
        value = self.value_from_object(obj)
        return value.stored() if isinstance(value, StoredSecret) else ""
