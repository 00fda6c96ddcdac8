from django.core.management.base import BaseCommand

from logserver import indexing


class Command(BaseCommand):
    help = (
        "Index every stored log line the log index does not have yet (the same "
        "sweep as the periodic task). --rebuild first forgets what was indexed, "
        "e.g. after switching PRODMON_LOG_INDEX."
    )

    def add_arguments(self, parser):
        parser.add_argument("--limit", type=int, default=1000, help="attempts per sweep")
        parser.add_argument("--rebuild", action="store_true", help="re-index everything")
        parser.add_argument(
            "--until-done", action="store_true", help="repeat sweeps until nothing is left"
        )

    def handle(self, *args, limit: int, rebuild: bool, until_done: bool, **options):
        if rebuild:
            reset = indexing.log_index_rebuild()
            self.stdout.write(f"forgot the index of {reset} attempts")
        while True:
            report = indexing.log_index_reconcile(limit=limit)
            self.stdout.write(
                f"indexed {report.lines} lines of {report.attempts} attempts"
                + (f"; {report.failed} failed (see the log)" if report.failed else "")
            )
            if not until_done or report.attempts < limit or report.attempts == 0:
                break
