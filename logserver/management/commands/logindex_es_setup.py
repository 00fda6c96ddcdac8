import json

from django.core.management.base import BaseCommand, CommandError

from logserver.index import elasticsearch as es
from prodmon.models import Experiment


class Command(BaseCommand):
    help = (
        "Install the Elasticsearch ILM policy and index template of the log index and "
        "create one data stream per experiment (logs-prodmon-<experiment>). Idempotent."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--print", action="store_true", help="print the policy and template; send nothing"
        )
        parser.add_argument(
            "--ilm-delete-days",
            type=int,
            default=0,
            help="also let ILM delete backing indices this many days after rollover "
            "(default: never; logs_retention deletes per experiment and spares open jobs)",
        )

    def handle(self, *args, ilm_delete_days: int, **options):
        experiments = list(Experiment.objects.order_by("name").values_list("name", flat=True))
        prefix = es.data_stream_prefix()
        if options["print"]:
            self.stdout.write(
                json.dumps(
                    {
                        f"PUT _ilm/policy/{es.policy_name()}": {
                            "policy": es.ilm_policy(delete_after_days=ilm_delete_days)
                        },
                        f"PUT _index_template/{prefix}": es.index_template(),
                        "data streams": [es.data_stream_name(e) for e in experiments],
                    },
                    indent=2,
                )
            )
            return
        try:
            done = es.es_setup(
                es.es_client(), experiments=experiments, delete_after_days=ilm_delete_days
            )
        except Exception as exc:  # noqa: BLE001 - report any client or server error plainly
            raise CommandError(f"Elasticsearch setup failed: {exc}") from exc
        for line in done:
            self.stdout.write(line)
