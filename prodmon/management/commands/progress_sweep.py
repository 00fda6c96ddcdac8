"""The progress app's periodic catch-up, by hand: stage/campaign-done and
failure-spike checks of active campaigns, then notifications that are due
(retries after backoff). Celery beat runs it with a broker; the embedded mode
runs it on a thread of the web process (prodmon/progress/runner.py). Use this
for a one-off catch-up, or from cron with PRODMON_EMBEDDED_SWEEP_SECONDS=0.

    manage.py progress_sweep
"""

from django.core.management.base import BaseCommand

from prodmon.progress import services


class Command(BaseCommand):
    help = "Run the progress checks of active campaigns and deliver due notifications."

    def handle(self, *args, **options):
        fired = services.progress_sweep()
        self.stdout.write(f"progress sweep: {fired} events fired")
