from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from mailboxes.encryption import SecretDecryptionError
from mailboxes.models import Mailbox

SECRET_FIELDS = ("imap_password", "smtp_password")


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored mailbox secret with the first key of MAILHUB_ENCRYPTION_KEYS. "
        "Run after prepending a new key; remove the old key only afterwards."
    )

    def handle(self, *args: object, **options: object) -> None:
        count = 0
        with transaction.atomic():
            # Loading never decrypts: each secret is re-encrypted explicitly (any configured key
            # opens it, the newest one seals it). One unreadable secret stops the whole run, so
            # that the old key is not removed while a secret still depends on it.
            for mailbox in Mailbox.objects.select_for_update().only("label", *SECRET_FIELDS):
                for name in SECRET_FIELDS:
                    try:
                        setattr(mailbox, name, getattr(mailbox, name).rotated())
                    except SecretDecryptionError as exc:
                        raise CommandError(
                            f"mailbox {mailbox.pk} ({mailbox.label}): {name} can't be decrypted with "
                            "MAILHUB_ENCRYPTION_KEYS; nothing was re-encrypted"
                        ) from exc
                mailbox.save(update_fields=list(SECRET_FIELDS))
                count += 1
        self.stdout.write(f"Re-encrypted the secrets of {count} mailbox(es).")
