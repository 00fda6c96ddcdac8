from django.apps import AppConfig


class LogserverConfig(AppConfig):
    name = "logserver"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from logserver import schema  # noqa: F401 - registers the OpenAPI auth extension
