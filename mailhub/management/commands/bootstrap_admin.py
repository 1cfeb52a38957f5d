import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "On an empty database, create an 'admin' superuser and print its generated password once."

    def handle(self, *args: object, **options: object) -> None:
        user_model = get_user_model()
        if user_model.objects.filter(is_superuser=True).exists():
            return
        password = secrets.token_urlsafe(12)
        user_model.objects.create_superuser("admin", "admin@localhost", password)
        self.stdout.write(
            self.style.SUCCESS(
                "\n  Created the first administrator.\n"
                "    username: admin\n"
                f"    password: {password}\n"
                "  This password is shown only once: note it now (change it in the admin later).\n"
            )
        )
