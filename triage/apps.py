import logging

from django.apps import AppConfig


class TriageConfig(AppConfig):
    name = "triage"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # drain3 logs every state save at INFO; keep that out of the worker log
        # unless someone asked for drain3's messages explicitly.
        drain_logger = logging.getLogger("drain3")
        if drain_logger.level == logging.NOTSET:
            drain_logger.setLevel(logging.WARNING)
