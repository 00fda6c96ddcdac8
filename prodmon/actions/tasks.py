"""Thin Celery tasks of the action layer: take ids, call a service.

Periodic (add to CELERY_BEAT_SCHEDULE, see docs/actions.md):
  actions.bulk_action_due_sweep_task   every 15 s: delayed launches, lost timers
  actions.submission_poll_task         every 60 s: batch states, hold reasons, ends
After every attempt end (wired into the ingest hook):
  actions.stage_autolaunch_check_task(stage_id)
"""

from celery import shared_task

from prodmon.actions import services


@shared_task(name="actions.bulk_action_run_task", ignore_result=True)
def bulk_action_run_task(action_id: int) -> None:
    services.bulk_action_run(action_id=action_id)


@shared_task(name="actions.bulk_action_due_sweep_task", ignore_result=True)
def bulk_action_due_sweep_task() -> None:
    services.bulk_action_run_due()


@shared_task(name="actions.stage_autolaunch_check_task", ignore_result=True)
def stage_autolaunch_check_task(stage_id: int) -> None:
    services.stage_autolaunch_check(stage_id=stage_id)


@shared_task(name="actions.submission_poll_task", ignore_result=True)
def submission_poll_task() -> None:
    services.submission_poll()
