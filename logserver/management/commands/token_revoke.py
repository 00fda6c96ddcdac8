from django.core.management.base import BaseCommand, CommandError

from logserver import services
from logserver.models import IngestToken


class Command(BaseCommand):
    help = "Revoke an ingest token by its prefix (pm_xxxxxxx). Takes effect at once."

    def add_arguments(self, parser):
        parser.add_argument("prefix")

    def handle(self, *args, prefix: str, **options):
        tokens = list(IngestToken.objects.filter(prefix=prefix))
        if len(tokens) != 1:
            raise CommandError(f"{len(tokens)} tokens have prefix {prefix!r}; need exactly one")
        services.token_revoke(token=tokens[0])
        self.stdout.write(f"revoked {tokens[0]}")
