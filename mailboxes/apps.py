from django.apps import AppConfig


class MailboxesConfig(AppConfig):
    name = "mailboxes"
    verbose_name = "Mailboxes"

    def ready(self) -> None:
        from .lookups import register_bounded_integer_lookups

        # Before any request: an id beyond the database's range matches no row (see lookups.py).
        register_bounded_integer_lookups()
