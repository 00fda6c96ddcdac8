"""Thin Celery tasks of the progress app: take ids, call a service.

- stage_after_end_task(stage_id): enqueue after every attempt end (the ingest
  hook); detects "stage done", "campaign done" and failure spikes.
- notification_deliver_task(notification_id): one delivery try.
- progress_sweep_task: periodic catch-up (checks + due deliveries).
- weekly_reports_send_task: the Monday report.
"""

import logging

from celery import shared_task

logger = logging.getLogger(__name__)


@shared_task(name="progress.stage_after_end_task", ignore_result=True)
def stage_after_end_task(stage_id: int) -> None:
    from prodmon.progress import services

    try:
        services.stage_after_end(stage_id=stage_id)
    except Exception:  # noqa: BLE001 - runs in-process in embedded mode: never fail the caller
        logger.exception("progress checks after an end of stage %s failed", stage_id)


@shared_task(name="progress.notification_deliver_task", ignore_result=True)
def notification_deliver_task(notification_id: int) -> None:
    from prodmon.progress import notifications

    try:
        notifications.notification_deliver(notification_id=notification_id)
    except Exception:  # noqa: BLE001 - the row stays pending; the sweep tries again
        logger.exception("delivery of notification %s failed", notification_id)


@shared_task(name="progress.progress_sweep_task", ignore_result=True)
def progress_sweep_task() -> None:
    from prodmon.progress import services

    services.progress_sweep()


@shared_task(name="progress.estimates_refresh_task", ignore_result=True)
def estimates_refresh_task() -> None:
    from prodmon.progress import estimates

    estimates.campaigns_estimate_refresh()


@shared_task(name="progress.weekly_reports_send_task", ignore_result=True)
def weekly_reports_send_task() -> None:
    from prodmon.progress import services

    services.weekly_reports_send()
