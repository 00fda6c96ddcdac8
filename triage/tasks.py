"""Triage tasks. attempt_classify_task is enqueued after every attempt end."""

from celery import shared_task


@shared_task(name="triage.attempt_classify_task", ignore_result=True)
def attempt_classify_task(attempt_id: int) -> None:
    from triage import services

    services.attempt_classify(attempt_id=attempt_id)
