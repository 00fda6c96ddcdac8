"""The progress app's periodic catch-up, for cron where no Celery beat runs
(the embedded mode): stage/campaign-done and failure-spike checks of active
campaigns, then notifications that are due (retries after backoff).

    manage.py progress_sweep
"""

from django.core.management.base import BaseCommand

from prodmon.progress import services


class Command(BaseCommand):
    help = "Run the progress checks of active campaigns and deliver due notifications."

    def handle(self, *args, **options):
        fired = services.progress_sweep()
        self.stdout.write(f"progress sweep: {fired} events fired")
