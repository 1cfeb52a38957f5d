from django.apps import AppConfig


class AutoresponseConfig(AppConfig):
    name = "autoresponse"
    verbose_name = "Auto-responses"
