"""Classify failed attempts again, e.g. after rules or code tables changed.

python manage.py triage_reclassify --experiment dune --hours 48
"""

import datetime as dt

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from prodmon.models import Attempt, Experiment
from triage import services


class Command(BaseCommand):
    help = "Re-run classification for the failed attempts of an experiment."

    def add_arguments(self, parser):
        parser.add_argument("--experiment", required=True)
        parser.add_argument("--hours", type=float, default=24.0, help="ended this recently")

    def handle(self, *args, experiment: str, hours: float, **options):
        experiment_obj = Experiment.objects.filter(name=experiment).first()
        if experiment_obj is None:
            raise CommandError(f"no experiment named {experiment!r}")
        since = timezone.now() - dt.timedelta(hours=hours)
        ids = Attempt.objects.filter(
            job__stage__campaign__experiment=experiment_obj,
            status=Attempt.Status.FAILED,
            ended_at__gte=since,
        ).values_list("pk", flat=True)
        done = sum(services.attempt_classify(attempt_id=pk) is not None for pk in ids.iterator())
        self.stdout.write(self.style.SUCCESS(f"{done} attempts classified"))
