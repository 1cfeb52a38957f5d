from django.core.management.base import BaseCommand
from django.db import transaction

from mailboxes.models import Mailbox


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored mailbox secret with the first key of MAILHUB_ENCRYPTION_KEYS. "
        "Run after prepending a new key; remove the old key only afterwards."
    )

    def handle(self, *args, **options) -> None:
        count = 0
        with transaction.atomic():
            # Loading decrypts with any configured key; saving encrypts with the newest one.
            for mailbox in Mailbox.objects.select_for_update().only("imap_password", "smtp_password"):
                mailbox.save(update_fields=["imap_password", "smtp_password"])
                count += 1
        self.stdout.write(f"Re-encrypted the secrets of {count} mailbox(es).")
