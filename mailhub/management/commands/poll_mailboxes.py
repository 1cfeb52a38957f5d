from django.core.management.base import BaseCommand, CommandError, CommandParser

from mailboxes.models import Mailbox
from mailhub.pipeline import mailbox_poll_inline


class Command(BaseCommand):
    help = (
        "Poll mailboxes now, synchronously (no broker needed), running the same chain as the "
        "background workers. Prints one line per mailbox; exits 1 if a mailbox failed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--mailbox", type=int, nargs="*", default=[], help="Mailbox ids (default: all active)"
        )

    def handle(self, *args: object, mailbox: list[int], **options: object) -> None:
        queryset = Mailbox.objects.filter(pk__in=mailbox) if mailbox else Mailbox.objects.active()
        mailbox_ids = list(queryset.order_by("pk").values_list("pk", flat=True))
        missing = set(mailbox) - set(mailbox_ids)
        if missing:
            raise CommandError(f"no mailbox with id {', '.join(map(str, sorted(missing)))}")
        failed = False
        for mailbox_id in mailbox_ids:
            result = mailbox_poll_inline(mailbox_id=mailbox_id)
            failed = failed or bool(result.error)
            self.stdout.write(result.summary)
        if failed:
            raise CommandError("at least one mailbox failed (see above)", returncode=1)
