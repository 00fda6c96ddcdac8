from django.core.management.base import BaseCommand, CommandError

from prodmon.demo.loader import DemoError, demo_load


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = (
        "Load demo data by really running jobs: a campaign gen -> reco -> ana whose jobs are "
        "short payload processes wrapped by prodmon-report, posting to the server at --url. "
        "Needs that server running on the same database. Does nothing if already loaded."
    )

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="the running server")
        parser.add_argument("--jobs", type=_positive_int, default=30, help="jobs to run (30)")
        parser.add_argument(
            "--parallel", type=_positive_int, default=4, help="jobs running at once (4)"
        )
        parser.add_argument(
            "--pace", type=_positive_float, default=1.0, help="payload slowness factor (1.0)"
        )
        parser.add_argument("--seed", type=int, default=2026, help="seed of the job mix")

    def handle(self, *args, url, jobs, parallel, pace, seed, **options):
        try:
            demo_load(
                url=url,
                jobs=jobs,
                parallel=parallel,
                pace=pace,
                seed=seed,
                write=self.stdout.write,
            )
        except DemoError as exc:
            raise CommandError(str(exc)) from exc
