"""Thin Celery tasks: take ids, call a service."""

from celery import shared_task

from prodmon import services


@shared_task(name="prodmon.stage_progress_sample_task", ignore_result=True)
def stage_progress_sample_task(stage_id: int) -> None:
    services.stage_progress_sample(stage_id=stage_id)


@shared_task(name="prodmon.stage_progress_sweep_task", ignore_result=True)
def stage_progress_sweep_task() -> None:
    services.stage_progress_sweep()
