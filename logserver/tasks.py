"""Thin Celery tasks of the log server: take ids, call a service.

Periodic ones (the lead keeps the schedule in settings.CELERY_BEAT_SCHEDULE):
- logserver.log_index_dirty_task      every PRODMON_LOG_INDEX_DEBOUNCE_SECONDS
- logserver.log_index_reconcile_task  every 5 minutes
- logserver.logs_retention_task       every 6 hours
- logserver.ingest_drain_task         every 5 seconds (queued ingest mode only)
"""

from celery import shared_task
from django.core.cache import cache

from logserver.index import LogIndexError


@shared_task(
    name="logserver.log_index_attempt_task",
    ignore_result=True,
    autoretry_for=(LogIndexError,),
    retry_backoff=True,
    max_retries=5,
)
def log_index_attempt_task(attempt_id: int) -> None:
    from logserver import indexing

    # Clear the debounce first: a chunk committed from now on enqueues again,
    # and one committed before is visible to this run.
    cache.delete(indexing.debounce_key(attempt_id))
    indexing.log_index_attempt(attempt_id=attempt_id)


@shared_task(name="logserver.attempt_ended_task", ignore_result=True)
def attempt_ended_task(stage_id: int, attempt_id: int) -> None:
    """Fan an attempt's end out to its follow-up tasks, off the request path."""
    from logserver.services import attempt_ended_fanout

    attempt_ended_fanout(stage_id, attempt_id)


@shared_task(name="logserver.attempts_ended_task", ignore_result=True)
def attempts_ended_task(ended: list) -> None:
    """The ends of one drained batch of queued events: [(stage id, attempt id)]."""
    from logserver.services import attempt_ended_fanout

    for stage_id, attempt_id in ended:
        attempt_ended_fanout(stage_id, attempt_id)


@shared_task(name="logserver.log_index_dirty_task", ignore_result=True)
def log_index_dirty_task() -> None:
    """Index the attempts whose logs grew since the last run (Redis cache)."""
    from logserver import indexing

    indexing.log_index_dirty_drain()


@shared_task(name="logserver.log_index_reconcile_task", ignore_result=True)
def log_index_reconcile_task() -> None:
    from logserver import indexing

    indexing.log_index_reconcile()


@shared_task(name="logserver.logs_retention_task", ignore_result=True)
def logs_retention_task() -> None:
    from logserver import retention

    retention.logs_retention_enforce()


@shared_task(name="logserver.ingest_drain_task", ignore_result=True)
def ingest_drain_task() -> None:
    """The safety net of the queued ingest mode: drains for up to 4 s when no
    `manage.py ingest_drain` process holds the drain lock (it returns at once
    when one does). A no-op in the inline mode."""
    from logserver import queue

    if queue.queued_mode():
        queue.queue_drain_all(time_budget=4.0)
