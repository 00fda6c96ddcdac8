"""Mail the weekly efficiency report to its subscribers (also a Celery beat task).

    manage.py send_weekly_reports [--week 2025-03-03]

Each subscriber gets each week once, however often this runs.
"""

import datetime as dt

from django.core.management.base import BaseCommand, CommandError

from prodmon.progress import services


class Command(BaseCommand):
    help = "Mail the weekly efficiency report (default: the last full week) to subscribers."

    def add_arguments(self, parser):
        parser.add_argument("--week", help="any day of the week to report, YYYY-MM-DD")

    def handle(self, *args, week=None, **options):
        day = None
        if week:
            try:
                day = dt.date.fromisoformat(week)
            except ValueError as exc:
                raise CommandError(f"--week must be YYYY-MM-DD, not {week!r}") from exc
        counts = services.weekly_reports_send(week_start=day)
        self.stdout.write(
            f"weekly reports: {counts['sent']} sent, {counts['skipped']} skipped, "
            f"{counts['failed']} failed"
        )
