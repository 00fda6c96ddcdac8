from django.core.management.base import BaseCommand

from logserver import retention


class Command(BaseCommand):
    help = (
        "Remove log tails and full logs past their experiment's retention. Logs of jobs "
        "still open in triage (a failure in a new, ongoing or regressed class, or not yet "
        "classified) or not ended are always kept."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would go; delete nothing"
        )

    def handle(self, *args, dry_run: bool, **options):
        report = retention.logs_retention_enforce(dry_run=dry_run)
        verb = "would remove" if dry_run else "removed"
        for e in report.experiments:
            self.stdout.write(
                f"{e.experiment}: tails kept {e.tail_days} d, full logs {e.full_log_days} d; "
                f"{verb} {e.tails} tails ({e.chunks} chunks, {e.chunk_bytes} bytes) and "
                f"{e.full_logs} full logs ({e.full_log_bytes} bytes); "
                f"kept for jobs open in triage or running: "
                f"{e.tails_kept_open} tails, {e.full_logs_kept_open} full logs"
            )
        self.stdout.write(
            f"total: {verb} {report.total('tails')} tails and {report.total('full_logs')} "
            "full logs" + (" (dry run: nothing deleted)" if dry_run else "")
        )
