"""Triage tasks: thin wrappers that take ids and call one service.

attempt_classify_task is enqueued (on commit) after every applied end event.
The sweeps are meant for the beat schedule: attempt_classify_sweep_task
catches failures whose task was lost (say, the broker was down), and
error_class_lifecycle_sweep_task moves classes from new/regressed to ongoing.
"""

from celery import shared_task


@shared_task(name="triage.attempt_classify_task", ignore_result=True)
def attempt_classify_task(attempt_id: int) -> None:
    from triage import services

    services.attempt_classify(attempt_id=attempt_id)
    # After the checks: a post-hoc failure (a missing output, an early end)
    # is already recorded when the partial failures are judged.
    services.partial_failure_assess(attempt_id=attempt_id)


@shared_task(name="triage.rule_reclassify_task", ignore_result=True)
def rule_reclassify_task(rule_id: int, attempt_ids: list[int] | None = None) -> None:
    from triage import services

    services.rule_reclassify(rule_id=rule_id, attempt_ids=attempt_ids)


@shared_task(name="triage.attempt_classify_sweep_task", ignore_result=True)
def attempt_classify_sweep_task() -> None:
    from triage import services

    services.attempt_classify_sweep()


@shared_task(name="triage.error_class_lifecycle_sweep_task", ignore_result=True)
def error_class_lifecycle_sweep_task() -> None:
    from triage import services

    services.error_class_lifecycle_sweep()


# --- node health and liveness (issue 5) ------------------------------------------------


@shared_task(name="triage.node_health_update_task", ignore_result=True)
def node_health_update_task(attempt_id: int) -> None:
    from triage import services

    services.node_health_update(attempt_id=attempt_id)


@shared_task(name="triage.node_health_sweep_task", ignore_result=True)
def node_health_sweep_task() -> None:
    from triage import services

    services.node_health_sweep()


@shared_task(name="triage.liveness_sweep_task", ignore_result=True)
def liveness_sweep_task() -> None:
    from triage import services

    services.liveness_sweep()
