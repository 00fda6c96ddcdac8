from django.apps import AppConfig


class LogserverConfig(AppConfig):
    name = "logserver"
    default_auto_field = "django.db.models.BigAutoField"
