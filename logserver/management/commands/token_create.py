from django.core.management.base import BaseCommand, CommandError

from logserver import services
from prodmon.models import Experiment


class Command(BaseCommand):
    help = "Create an ingest token for an experiment and print it once."

    def add_arguments(self, parser):
        parser.add_argument("experiment")
        parser.add_argument("name")
        parser.add_argument("--scopes", default="ingest", help="comma-separated: ingest,read")

    def handle(self, *args, experiment: str, name: str, scopes: str, **options):
        exp = Experiment.objects.filter(name=experiment).first()
        if exp is None:
            raise CommandError(f"no experiment {experiment!r}")
        try:
            token, raw = services.token_create(
                experiment=exp,
                name=name,
                scopes=[s.strip() for s in scopes.split(",") if s.strip()],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(raw)
        self.stderr.write(f"token {token.prefix}… for {exp.name}; shown once, stored hashed")
