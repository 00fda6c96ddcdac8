"""The one Celery app. Each domain keeps its tasks in its own tasks.py."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prodmon.settings.embedded")

app = Celery("prodmon")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Task modules of packages inside apps, which autodiscovery does not walk.
app.autodiscover_tasks(["prodmon.progress", "prodmon.actions"])
