from django.apps import AppConfig


class MailhubConfig(AppConfig):
    """The top layer: the pipeline and its tasks, the staff pages, the admin, the commands."""

    name = "mailhub"
    verbose_name = "mailhub"
