from django.apps import apps
from django.core.management.base import BaseCommand, CommandError
from django.db import models, transaction

from mailboxes.encryption import EncryptedTextField, SecretDecryptionError


def encrypted_fields() -> list[tuple[type[models.Model], tuple[str, ...]]]:
    """Every model with secrets and the names of its EncryptedTextFields: the mailboxes'
    passwords, the OAuth2 connections' client secret, access and refresh tokens, and whatever
    secret a model adds later. Found from the fields, not listed by hand, so that no secret is
    left on a key that is about to be removed."""
    found = []
    for model in apps.get_models():
        names = tuple(
            field.name for field in model._meta.concrete_fields if isinstance(field, EncryptedTextField)
        )
        if names:
            found.append((model, names))
    return found


def _describe(row: models.Model) -> str:
    """The mailbox a row belongs to, by label (never a secret): the admin knows where to look."""
    label = getattr(row, "label", None)
    if label is None and getattr(row, "mailbox_id", None) is not None:
        label = f"mailbox {row.mailbox.label}"  # type: ignore[attr-defined]
    return str(label or "")


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret (mailbox passwords, OAuth2 client secrets and tokens) with "
        "the first key of MAILHUB_ENCRYPTION_KEYS. Run after prepending a new key; remove the old "
        "key only afterwards."
    )

    def handle(self, *args: object, **options: object) -> None:
        counts: list[str] = []
        with transaction.atomic():
            # Loading never decrypts: each secret is re-encrypted explicitly (any configured key
            # opens it, the newest one seals it). One unreadable secret stops the whole run, so
            # that the old key is not removed while a secret still depends on it. The row lock
            # also makes a token refresh (which writes its grant under the same lock) wait, so
            # that a rotated refresh token is neither lost nor left on the old key.
            for model, names in encrypted_fields():
                count = 0
                for row in model._default_manager.select_for_update().order_by("pk"):
                    for name in names:
                        try:
                            setattr(row, name, getattr(row, name).rotated())
                        except SecretDecryptionError as exc:
                            raise CommandError(
                                f"{model._meta.verbose_name} {row.pk} ({_describe(row)}): {name} can't be "
                                "decrypted with MAILHUB_ENCRYPTION_KEYS; nothing was re-encrypted"
                            ) from exc
                    row.save(update_fields=list(names))
                    count += 1
                counts.append(f"{count} {model._meta.verbose_name_plural}")
        self.stdout.write(f"Re-encrypted the secrets of {', '.join(counts)}.")
