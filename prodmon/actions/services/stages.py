"""Stage states: hold, release, finish what is running, abort; and the checks
after an attempt ends (a finishing stage completes, a dependent stage launches
itself when its parents reach its completion percentage)."""

import hashlib

from django.db import transaction
from django.utils import timezone

from prodmon import services as production
from prodmon.actions.services.batch import attempt_end_from_batch
from prodmon.actions.services.common import OPEN_STATUSES, ActionRefused
from prodmon.actions.services.requests import stage_launch_request
from prodmon.actions.services.runner import bulk_action_schedule, parent_outputs_not_inputs
from prodmon.models import Attempt, AuditEntry, BulkAction, Stage, Submission
from prodmon.submission.base import BatchRef, BatchState, BatchStatus, SubmissionError, backend_get
from prodmon.submission.spec import attempt_workdir


def _open_submitted_attempts(stage: Stage) -> list[Attempt]:
    return list(
        Attempt.objects.filter(job__stage=stage, status__in=OPEN_STATUSES, submission__isnull=False)
        .exclude(batch_id="")
        .select_related("submission")
    )


def _stage_transition(
    *, stage: Stage, allowed_from: tuple, to: str, actor, verb: str
) -> tuple[Stage, str]:
    with transaction.atomic():
        locked = Stage.objects.select_for_update().get(pk=stage.pk)
        if locked.state not in allowed_from:
            raise ActionRefused(f"cannot {verb} a stage that is {locked.state}", code="stage_state")
        before = locked.state
        locked.state = to
        locked.save(update_fields=["state"])
    stage.state = to
    return stage, before


def _pending_actions_cancel(stage: Stage, reason: str) -> int:
    ids = list(
        BulkAction.objects.filter(stage=stage, state__in=BulkAction.OPEN).values_list(
            "pk", flat=True
        )
    )
    BulkAction.objects.filter(pk__in=ids, state__in=BulkAction.OPEN).update(
        state=BulkAction.State.CANCELLED, finished_at=timezone.now(), result=reason
    )
    Submission.objects.filter(action_id__in=ids, state=Submission.State.PENDING).update(
        state=Submission.State.CANCELLED
    )
    return len(ids)


def _batch_each(attempts: list[Attempt], method: str) -> list[str]:
    said = []
    backends: dict[str, object] = {}
    for a in attempts:
        name = a.submission.backend
        try:
            backend = backends.setdefault(name, backend_get(name))
            answer = getattr(backend, method)(BatchRef(a.batch_id, attempt_workdir(a.uid)))
            said.append(f"{a.batch_id}: {answer}")
        except SubmissionError as exc:
            said.append(f"{a.batch_id}: {exc.message}")
    return said


def stage_hold(*, stage: Stage, actor) -> str:
    """No new submissions; pending launches wait; queued batch jobs are held."""
    stage, before = _stage_transition(
        stage=stage,
        allowed_from=(Stage.State.PENDING, Stage.State.ACTIVE, Stage.State.FINISHING),
        to=Stage.State.HELD,
        actor=actor,
        verb="hold",
    )
    queued = [a for a in _open_submitted_attempts(stage) if a.status == Attempt.Status.QUEUED]
    said = _batch_each(queued, "hold")
    result = f"held ({len(queued)} queued batch jobs asked to hold)"
    production.audit_record(
        actor=actor,
        action="stage.hold",
        experiment=stage.campaign.experiment,
        target=stage,
        params={"from": before, "batch": said[:50]},
        result=result,
    )
    return result


def stage_release(*, stage: Stage, actor) -> str:
    """Back to the state it was held from (the hold's audit entry says which)."""
    hold = (
        AuditEntry.objects.filter(action="stage.hold", target_type="stage", target_id=str(stage.pk))
        .order_by("-created_at", "-pk")
        .first()
    )
    previous = (hold.params.get("from") if hold else "") or Stage.State.ACTIVE
    stage, before = _stage_transition(
        stage=stage,
        allowed_from=(Stage.State.HELD,),
        to=previous,
        actor=actor,
        verb="release",
    )
    queued = [a for a in _open_submitted_attempts(stage) if a.status == Attempt.Status.QUEUED]
    said = _batch_each(queued, "release")
    waiting = list(BulkAction.objects.filter(stage=stage, state=BulkAction.State.PENDING))
    for action in waiting:
        bulk_action_schedule(action)
    result = f"released ({len(queued)} batch jobs, {len(waiting)} waiting requests)"
    production.audit_record(
        actor=actor,
        action="stage.release",
        experiment=stage.campaign.experiment,
        target=stage,
        params={"from": before, "batch": said[:50]},
        result=result,
    )
    return result


def stage_finish(*, stage: Stage, actor) -> str:
    """Finish what is running: no new submissions; completed once nothing is open."""
    stage, before = _stage_transition(
        stage=stage,
        allowed_from=(Stage.State.PENDING, Stage.State.ACTIVE, Stage.State.HELD),
        to=Stage.State.FINISHING,
        actor=actor,
        verb="finish",
    )
    cancelled = _pending_actions_cancel(stage, "cancelled: the stage is finishing")
    completed = stage_finishing_check(stage_id=stage.pk)
    result = "completed: nothing was running" if completed else "finishing what is running"
    if cancelled:
        result += f"; {cancelled} waiting requests cancelled"
    production.audit_record(
        actor=actor,
        action="stage.finish",
        experiment=stage.campaign.experiment,
        target=stage,
        params={"from": before},
        result=result,
    )
    return result


def stage_abort(*, stage: Stage, actor) -> str:
    """Cancel waiting requests, remove every queued or running batch job prodmon
    submitted for this stage and end those attempts as failed."""
    stage, before = _stage_transition(
        stage=stage,
        allowed_from=(
            Stage.State.PENDING,
            Stage.State.ACTIVE,
            Stage.State.HELD,
            Stage.State.FINISHING,
        ),
        to=Stage.State.ABORTED,
        actor=actor,
        verb="abort",
    )
    cancelled = _pending_actions_cancel(stage, "cancelled: the stage was aborted")
    attempts = _open_submitted_attempts(stage)
    said = _batch_each(attempts, "cancel")
    for a in attempts:
        attempt_end_from_batch(
            attempt=a,
            status=BatchStatus(a.batch_id, BatchState.CANCELLED, raw_state="aborted"),
            events=[],
            kind="aborted",
            detail="the stage was aborted",
        )
    result = f"aborted: {len(attempts)} batch jobs removed, {cancelled} waiting requests cancelled"
    production.audit_record(
        actor=actor,
        action="stage.abort",
        experiment=stage.campaign.experiment,
        target=stage,
        params={"from": before, "batch": said[:50]},
        result=result,
    )
    return result


def stage_finishing_check(*, stage_id: int) -> bool:
    """A finishing stage with nothing open any more is completed."""
    if Attempt.objects.filter(job__stage_id=stage_id, status__in=OPEN_STATUSES).exists():
        return False
    done = Stage.objects.filter(pk=stage_id, state=Stage.State.FINISHING).update(
        state=Stage.State.COMPLETED
    )
    return done == 1


def stage_autolaunch_check(*, stage_id: int) -> list[BulkAction]:
    """After an attempt of this stage ended: complete it if it was finishing, and
    launch each dependent stage marked autolaunch.

    - The first launch happens once every parent has reached the dependent's
      completion percentage. Its idempotency key "autolaunch-<stage id>" makes
      it happen once, however many ends arrive together; it waits the back-out
      delay like any launch.
    - After that, the launch is incremental: parents' good outputs that arrive
      later and are not yet inputs of the dependent are launched too, at once,
      by a top-up launch whose key names that set of outputs (so concurrent
      checks that see the same new outputs make one request). A top-up waits
      while an earlier launch of the stage is still pending (that one derives
      its inputs when it runs), and per-job row locks refuse a job that was
      already submitted, so no input is ever submitted twice.
    """
    from prodmon.selectors import stage_progress_list

    stage_finishing_check(stage_id=stage_id)
    launched = []
    dependents = Stage.objects.filter(
        depends_on__pk=stage_id,
        autolaunch=True,
        state__in=[Stage.State.PENDING, Stage.State.ACTIVE],
    ).select_related("campaign__experiment")
    for dependent in dependents:
        launches = BulkAction.objects.filter(stage=dependent, kind=BulkAction.Kind.LAUNCH)
        if launches.exists():
            action = _autolaunch_top_up(dependent, launches)
            if action is not None:
                launched.append(action)
            continue
        parents = list(dependent.depends_on.all())
        progress = stage_progress_list(stages=parents)
        if not progress or not all(
            p.denominator and p.pct_complete >= dependent.completion_pct for p in progress
        ):
            continue
        try:
            action, created = stage_launch_request(
                stage=dependent,
                actor=None,
                actor_label="autolaunch",
                idempotency_key=f"autolaunch-{dependent.pk}",
            )
        except ActionRefused:
            continue
        if created:
            launched.append(action)
    return launched


def _autolaunch_top_up(dependent: Stage, launches) -> BulkAction | None:
    """Launch the parents' good outputs that arrived after the dependent stage
    was launched (see stage_autolaunch_check). None when there are none."""
    if launches.filter(state=BulkAction.State.PENDING).exists():
        return None  # it derives its inputs when it runs
    if not launches.exclude(state=BulkAction.State.CANCELLED).exists():
        return None  # the launch was cancelled: an operator decided against it
    new = sorted(set(parent_outputs_not_inputs(dependent)))
    if not new:
        return None
    digest = hashlib.sha256("\n".join(new).encode()).hexdigest()[:32]
    try:
        action, created = stage_launch_request(
            stage=dependent,
            actor=None,
            actor_label="autolaunch",
            idempotency_key=f"autolaunch-{dependent.pk}-{digest}",
            delay_s=0,
        )
    except ActionRefused:
        return None
    return action if created else None
