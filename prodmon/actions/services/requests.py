"""Operator requests that submit work: a retry (one job or many), a recovery, a
stage launch; and cancelling one during its back-out delay.

The form's idempotency key is unique (BulkAction.idempotency_key): a double
click or a re-sent form finds the first request instead of making a second.
"""

import datetime as dt

from django.db import IntegrityError, transaction
from django.utils import timezone

from prodmon import services as production
from prodmon.actions.services.common import (
    ActionRefused,
    actor_label_for,
    backout_seconds,
    stage_backend_name,
    stage_initial_submission,
    stage_open_or_refuse,
    user_or_none,
)
from prodmon.actions.services.runner import bulk_action_run, bulk_action_schedule
from prodmon.models import BulkAction, Experiment, Job, Stage, Submission


def _action_create(
    *,
    kind: str,
    experiment: Experiment,
    stage: Stage | None,
    actor,
    actor_label: str,
    idempotency_key: str,
    params: dict,
    job_ids: list[int],
    delay_s: float = 0,
) -> tuple[BulkAction, bool]:
    """Create the request, or find the one this idempotency key already made."""
    now = timezone.now()
    try:
        with transaction.atomic():
            action = BulkAction.objects.create(
                kind=kind,
                experiment=experiment,
                stage=stage,
                created_by=user_or_none(actor),
                actor_label=actor_label_for(actor, actor_label),
                idempotency_key=idempotency_key,
                params=params,
                job_ids=list(job_ids),
                total=len(job_ids),
                created_at=now,
                not_before=now + dt.timedelta(seconds=max(delay_s, 0)),
            )
    except IntegrityError:
        existing = BulkAction.objects.filter(idempotency_key=idempotency_key).first()
        if existing is None:
            raise
        if existing.kind != kind or existing.experiment_id != experiment.pk:
            raise ActionRefused(
                "this form was already used for another action; reload the page"
            ) from None
        return existing, False
    return action, True


def job_retry_request(
    *,
    job: Job,
    actor,
    idempotency_key: str,
    force: bool = False,
    more_resources: bool = False,
) -> tuple[BulkAction, bool]:
    """Retry one job now. Returns (action, created): a repeated key returns the
    first request's action, untouched."""
    stage = job.stage
    action, created = _action_create(
        kind=BulkAction.Kind.RETRY,
        experiment=stage.campaign.experiment,
        stage=stage,
        actor=actor,
        actor_label="",
        idempotency_key=idempotency_key,
        params={"job": job.pk, "force": force, "more_resources": more_resources},
        job_ids=[job.pk],
    )
    if created:
        # One job is a quick hand-over to the batch system (the job itself runs
        # detached), so it runs within the request and the page can say how it went.
        bulk_action_run(action_id=action.pk)
        action.refresh_from_db()
    return action, created


def bulk_retry_request(
    *,
    experiment: Experiment,
    job_ids: list[int],
    filters: dict,
    actor,
    idempotency_key: str,
    force: bool = False,
    more_resources: bool = False,
    stage: Stage | None = None,
) -> tuple[BulkAction, bool]:
    """Retry the jobs confirmed on the confirmation page, in the background."""
    action, created = _action_create(
        kind=BulkAction.Kind.RETRY,
        experiment=experiment,
        stage=stage,
        actor=actor,
        actor_label="",
        idempotency_key=idempotency_key,
        params={"filters": filters, "force": force, "more_resources": more_resources},
        job_ids=job_ids,
    )
    if created:
        production.audit_record(
            actor=actor,
            action="bulk.retry.request",
            experiment=experiment,
            target=action,
            params={**action.params, "count": len(job_ids)},
            result=f"{len(job_ids)} jobs to retry",
        )
        bulk_action_schedule(action)
    return action, created


def recovery_request(
    *,
    stage: Stage,
    recovery_type: str,
    job_ids: list[int],
    actor,
    idempotency_key: str,
    force: bool = False,
    delay_s: float | None = None,
) -> tuple[BulkAction, bool]:
    """A recovery submission for the stage's inputs without a good output,
    attached to the stage's initial submission; it waits the back-out delay."""
    stage_open_or_refuse(stage)
    delay = backout_seconds(delay_s)
    with transaction.atomic():
        action, created = _action_create(
            kind=BulkAction.Kind.RECOVERY,
            experiment=stage.campaign.experiment,
            stage=stage,
            actor=actor,
            actor_label="",
            idempotency_key=idempotency_key,
            params={"recovery_type": recovery_type, "force": force, "delay_s": delay},
            job_ids=job_ids,
            delay_s=delay,
        )
        if created:
            Submission.objects.create(
                stage=stage,
                kind=Submission.Kind.RECOVERY,
                state=Submission.State.PENDING,
                launched_by=user_or_none(actor),
                launched_at=action.not_before,
                backend=stage_backend_name(stage),
                parent=stage_initial_submission(stage),
                action=action,
            )
            production.audit_record(
                actor=actor,
                action="stage.recovery.request",
                experiment=stage.campaign.experiment,
                target=stage,
                params={**action.params, "count": len(job_ids), "action": action.pk},
                result=f"{len(job_ids)} jobs, runs in {delay:g} s unless cancelled",
            )
            bulk_action_schedule(action)
    return action, created


def stage_launch_request(
    *,
    stage: Stage,
    actor,
    idempotency_key: str,
    delay_s: float | None = None,
    actor_label: str = "",
) -> tuple[BulkAction, bool]:
    """Launch the stage: submit every job that has never been submitted (for a
    dependent stage, first deriving its inputs from its parents' good outputs),
    after the back-out delay, during which it can be cancelled."""
    stage_open_or_refuse(stage)
    delay = backout_seconds(delay_s)
    with transaction.atomic():
        action, created = _action_create(
            kind=BulkAction.Kind.LAUNCH,
            experiment=stage.campaign.experiment,
            stage=stage,
            actor=actor,
            actor_label=actor_label,
            idempotency_key=idempotency_key,
            params={"delay_s": delay},
            job_ids=[],
            delay_s=delay,
        )
        if created:
            Submission.objects.create(
                stage=stage,
                kind=Submission.Kind.INITIAL,
                state=Submission.State.PENDING,
                launched_by=user_or_none(actor),
                launched_at=action.not_before,
                backend=stage_backend_name(stage),
                action=action,
            )
            production.audit_record(
                actor=actor,
                actor_label=actor_label,
                action="stage.launch.request",
                experiment=stage.campaign.experiment,
                target=stage,
                params={"action": action.pk, "delay_s": delay},
                result=f"launches in {delay:g} s unless cancelled",
            )
            bulk_action_schedule(action)
    return action, created


def bulk_action_cancel(*, action: BulkAction, actor) -> bool:
    """Cancel a request still in its back-out delay (or stop a running bulk
    retry between two jobs). False when it had already finished."""
    now = timezone.now()
    with transaction.atomic():
        was_pending = (
            BulkAction.objects.filter(pk=action.pk, state=BulkAction.State.PENDING).update(
                state=BulkAction.State.CANCELLED,
                finished_at=now,
                result="cancelled before it started",
            )
            == 1
        )
        stopped = (
            not was_pending
            and BulkAction.objects.filter(pk=action.pk, state=BulkAction.State.RUNNING).update(
                state=BulkAction.State.CANCELLED, finished_at=now
            )
            == 1
        )
        if was_pending:
            Submission.objects.filter(action=action, state=Submission.State.PENDING).update(
                state=Submission.State.CANCELLED, output="cancelled before it was submitted\n"
            )
        ok = was_pending or stopped
        production.audit_record(
            actor=actor,
            action=f"{action.kind}.cancel",
            experiment=action.experiment,
            target=action,
            params={"action": action.pk},
            result=(
                "cancelled before it started"
                if was_pending
                else "stopped between two jobs"
                if stopped
                else "too late: it had already finished"
            ),
        )
    action.refresh_from_db()
    return ok
