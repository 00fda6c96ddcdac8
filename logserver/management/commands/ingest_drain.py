import signal
import time

from django.core.management.base import BaseCommand
from django.db import DatabaseError, connection

from logserver import queue


class Command(BaseCommand):
    help = (
        "Apply queued ingest events (PRODMON_INGEST_MODE=queued) in batches, in "
        "arrival order. Without --once it runs until SIGTERM/SIGINT, polling an "
        "empty queue every --idle seconds; run one per deployment (a second one "
        "waits on the drain lock, so it is a hot standby)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="drain what is queued, then exit")
        parser.add_argument(
            "--idle", type=float, default=0.05, help="seconds between polls of an empty queue"
        )

    def handle(self, *args, once: bool, idle: float, **options):
        if once:
            result = queue.queue_drain_all()
            self.stdout.write(f"applied {result.applied}, rejected {result.rejected}")
            return
        stopping = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stopping.append(True))
        applied = rejected = 0
        while not stopping:
            try:
                result = queue.queue_drain()
            except DatabaseError as exc:
                # The database restarts or is unreachable: nothing is lost (the
                # batch rolled back); reconnect and retry after a pause.
                self.stderr.write(f"ingest drain: {exc}; retrying in 1 s")
                connection.close()
                time.sleep(1.0)
                continue
            applied += result.applied
            rejected += result.rejected
            if result.done == 0:
                time.sleep(idle if not result.busy else max(idle, 0.5))
        self.stdout.write(f"ingest drain stopped: applied {applied}, rejected {rejected}")
