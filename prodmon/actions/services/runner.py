"""Running a request: claim it (a conditional update, so one worker runs it),
then each job under its own row lock and transaction, and hand the queued
attempt to the stage's backend once committed.

A queued attempt is committed before the batch system hears of it, so a crash
between the two leaves a queued attempt the poll can see, never a batch job
prodmon does not know about.
"""

import datetime as dt
import logging
import threading
import uuid
from dataclasses import dataclass

from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from prodmon import services as production
from prodmon.actions import hooks, rules
from prodmon.actions.services.batch import attempt_close_stale, attempt_end_from_batch
from prodmon.actions.services.common import (
    MESSAGES_MAX,
    OPEN_STATUSES,
    ActionRefused,
    stage_backend_name,
    stage_initial_submission,
)
from prodmon.models import (
    Attempt,
    AuditEntry,
    BulkAction,
    ConfigSnapshot,
    Job,
    OutputFile,
    Stage,
    Submission,
)
from prodmon.submission.base import BatchState, BatchStatus, SubmissionError, backend_get
from prodmon.submission.config import setting
from prodmon.submission.spec import attempt_workdir, job_spec_build

logger = logging.getLogger(__name__)

# How often (in jobs) a running bulk action looks whether it was cancelled.
CANCEL_CHECK_EVERY = 10
# Timers of the "thread" runner (the embedded mode) that have not finished.
_timers: set[threading.Timer] = set()
_timers_lock = threading.Lock()


def bulk_action_schedule(action: BulkAction, *, resume: bool = False) -> None:
    """Run the action once committed, after its back-out delay (see docs/actions.md).
    With `resume`, at once: a running action whose process died."""
    from prodmon.actions.tasks import bulk_action_run_task

    action_id = action.pk
    delay = 0.0 if resume else max(0.0, (action.not_before - timezone.now()).total_seconds())
    runner = setting("PRODMON_ACTIONS_RUNNER")

    def go():
        if runner == "none":
            return  # left to the due sweep (bulk_action_run_due)
        if runner == "thread":
            timer = threading.Timer(delay, _thread_run, args=[action_id])
            timer.daemon = True
            with _timers_lock:
                _timers.add(timer)
            timer.start()
        elif bulk_action_run_task.app.conf.task_always_eager:
            # Eager Celery has no timers: a delayed action is left to the due sweep.
            if delay <= 0:
                bulk_action_run_task.delay(action_id)
        else:
            bulk_action_run_task.apply_async((action_id,), countdown=delay)

    transaction.on_commit(go)


def _thread_run(action_id: int) -> None:
    try:
        bulk_action_run(action_id=action_id)
    except Exception:  # noqa: BLE001 - a background thread has nobody to raise to
        logger.exception("bulk action %s failed", action_id)
    finally:
        connection.close()
        with _timers_lock:
            _timers.discard(threading.current_thread())


def thread_runner_stop(*, timeout_s: float = 30, cancel: bool = True) -> int:
    """Cancel the in-process timers that have not fired (unless `cancel` is
    False) and wait for the others to finish: for tests and a clean shutdown.
    A cancelled timer's action stays pending: the due sweep or the action page's
    poll starts it again. Returns how many were cancelled."""
    with _timers_lock:
        timers = list(_timers)
    cancelled = 0
    for timer in timers:
        if cancel and not timer.finished.is_set():
            timer.cancel()
            cancelled += 1
    for timer in timers:
        if timer.is_alive():
            timer.join(timeout_s)
    return cancelled


def _lease_s() -> float:
    return float(setting("PRODMON_ACTIONS_LEASE_SECONDS"))


def _stale_running(now: dt.datetime) -> Q:
    """Running actions whose process is gone: the lease ran out (or, for a row
    from before leases, it started longer than a lease ago)."""
    return Q(state=BulkAction.State.RUNNING) & (
        Q(lease_until__lt=now)
        | Q(lease_until__isnull=True, started_at__lt=now - dt.timedelta(seconds=_lease_s()))
    )


def bulk_action_run_due(*, now: dt.datetime | None = None) -> int:
    """Run every pending action whose back-out delay is over, and resume every
    running one whose process died (its lease ran out): the periodic sweep;
    also what runs delayed actions when Celery is eager."""
    now = now or timezone.now()
    due = Q(state=BulkAction.State.PENDING, not_before__lte=now) | _stale_running(now)
    ids = list(
        BulkAction.objects.filter(due)
        .exclude(~Q(kind=BulkAction.Kind.RETRY) & Q(stage__state=Stage.State.HELD))
        .order_by("not_before")
        .values_list("pk", flat=True)[:100]
    )
    return sum(bulk_action_run(action_id=pk) is not None for pk in ids)


def bulk_action_kick(*, action: BulkAction, grace_s: float = 10) -> bool:
    """Schedule an overdue pending action again (its timer died with a restarted
    process), or a running one whose lease ran out (its process died mid-run).
    Harmless when it is already running: runs are claimed atomically."""
    now = timezone.now()
    overdue = now - dt.timedelta(seconds=grace_s)
    if action.state == BulkAction.State.RUNNING:
        if not BulkAction.objects.filter(_stale_running(now), pk=action.pk).exists():
            return False
    elif action.state != BulkAction.State.PENDING or action.not_before > overdue:
        return False
    if action.kind != BulkAction.Kind.RETRY and action.stage.state == Stage.State.HELD:
        return False
    bulk_action_schedule(action, resume=action.state == BulkAction.State.RUNNING)
    return True


def bulk_action_run(*, action_id: int) -> BulkAction | None:
    """Claim a due pending action, or a running one whose lease ran out, and
    run it (resuming where the dead process stopped). None when it is not due,
    was cancelled, or another process claimed it first."""
    now = timezone.now()
    owner = uuid.uuid4().hex
    lease = {"lease_owner": owner, "lease_until": now + dt.timedelta(seconds=_lease_s())}
    resuming = False
    claimed = BulkAction.objects.filter(
        pk=action_id, state=BulkAction.State.PENDING, not_before__lte=now
    ).update(state=BulkAction.State.RUNNING, started_at=now, **lease)
    if claimed != 1:
        claimed = BulkAction.objects.filter(_stale_running(now), pk=action_id).update(**lease)
        resuming = claimed == 1
    if claimed != 1:
        return None
    action = BulkAction.objects.select_related("experiment", "stage__campaign__experiment").get(
        pk=action_id
    )
    if action.kind != BulkAction.Kind.RETRY and action.stage.state == Stage.State.HELD:
        # A held stage keeps its launches and recoveries waiting until it is
        # released; a retry is refused job by job instead (the operator sees why).
        BulkAction.objects.filter(
            pk=action.pk, state=BulkAction.State.RUNNING, lease_owner=owner
        ).update(state=BulkAction.State.PENDING, started_at=None, lease_owner="", lease_until=None)
        return action
    if resuming:
        production.audit_record(
            actor=None,
            actor_label="prodmon",
            action=f"{action.kind}.resume",
            experiment=action.experiment,
            target=action.stage or action,
            params={"action": action.pk, "done": action.done, "total": action.total},
            result="resumed: the process running it had stopped",
        )
    _ActionRun(action, owner=owner, resuming=resuming).run()
    action.refresh_from_db()
    return action


@dataclass
class _Counts:
    done: int = 0
    failed: int = 0
    skipped: int = 0


class _ActionRun:
    """One run of a BulkAction: each job under its own lock and transaction."""

    def __init__(self, action: BulkAction, *, owner: str = "", resuming: bool = False):
        self.action = action
        self.owner = owner or action.lease_owner
        self.resuming = resuming
        self.renewed_at = timezone.now()
        self.lost_lease = False
        self.force = bool(action.params.get("force"))
        self.more = bool(action.params.get("more_resources"))
        self.recovery_type = action.params.get("recovery_type", "")
        self.counts = _Counts()
        self.submissions: dict[int, Submission] = {
            s.stage_id: s for s in Submission.objects.filter(action=action)
        }
        self.backends: dict[str, object] = {}
        self.runnable: dict[int, bool] = {}
        self.dirty: set[int] = set()

    # -- the loop

    def run(self) -> None:
        action = self.action
        if action.kind == BulkAction.Kind.LAUNCH and not (self.resuming and action.job_ids):
            job_ids = _launch_prepare(action.stage)
            BulkAction.objects.filter(pk=action.pk).update(job_ids=job_ids, total=len(job_ids))
        else:
            job_ids = list(action.job_ids)
        handled = self._handled() if self.resuming else set()
        for i, job_id in enumerate(job_ids):
            if i % CANCEL_CHECK_EVERY == 0 and self._cancelled():
                break
            if not self._lease_renew():
                return  # another process took over: it finishes the action
            if job_id in handled:
                continue
            self.one(job_id)
            if i % 20 == 19:
                self._save_submissions()
        self._finish(total=len(job_ids))

    def _cancelled(self) -> bool:
        return BulkAction.objects.filter(
            pk=self.action.pk, state=BulkAction.State.CANCELLED
        ).exists()

    def _verb(self) -> str:
        return {"retry": "job.retry", "recovery": "job.recover", "launch": "job.launch"}[
            self.action.kind
        ]

    def _handled(self) -> set[int]:
        """Jobs a dead run of this action already dealt with: each has its
        audit entry (written once the job was submitted, refused or failed)."""
        targets = AuditEntry.objects.filter(
            action=self._verb(), params__action=self.action.pk, target_type="job"
        ).values_list("target_id", flat=True)
        return {int(t) for t in targets if str(t).isdigit()}

    def _lease_renew(self) -> bool:
        """Keep the lease while running; False when this run lost it (it ran
        out and another process resumed the action)."""
        if self.lost_lease:
            return False
        now = timezone.now()
        if (now - self.renewed_at).total_seconds() < _lease_s() / 3:
            return True
        renewed = BulkAction.objects.filter(
            pk=self.action.pk, lease_owner=self.owner, state=BulkAction.State.RUNNING
        ).update(lease_until=now + dt.timedelta(seconds=_lease_s()))
        if renewed:
            self.renewed_at = now
            return True
        # Cancelled between two jobs is not a lost lease: the loop's cancel check stops it.
        if self._cancelled():
            return True
        self.lost_lease = True
        self._save_submissions()
        logger.warning("action %s: lease lost to another process; stopping", self.action.pk)
        return False

    def _interrupted_attempt(self, job_id: int) -> Attempt | None:
        """The attempt this action made for the job before its process died
        (queued, maybe handed over, but not yet counted and audited)."""
        return (
            Attempt.objects.filter(job_id=job_id, submission__action=self.action)
            .select_related("job__stage__campaign__experiment", "submission")
            .order_by("-number")
            .first()
        )

    def one(self, job_id: int) -> None:
        verb = self._verb()
        interrupted = self._interrupted_attempt(job_id) if self.resuming else None
        try:
            # The submission row is made (and committed) before the job's own
            # transaction, so a refused job never takes it down with it.
            stage = Stage.objects.select_related("campaign__experiment").get(
                pk=Job.objects.values_list("stage_id", flat=True).get(pk=job_id)
            )
            submission = self._submission_for(stage)
            # A stage that cannot be submitted at all (no command, unknown
            # backend) fails here, before an attempt is spent on it.
            backend = self._backend(submission.backend)
            self._runnable(stage)
            if interrupted is not None:
                attempt, resources = self._resume_attempt(interrupted, backend)
            else:
                attempt, resources = self._queue(job_id, submission)
        except ActionRefused as exc:
            self._count(
                "skipped",
                f"job {job_id}: {exc.message}",
                audit=dict(verb=verb, job_id=job_id, result=f"refused: {exc.message}"),
            )
            return
        except Job.DoesNotExist:
            self._count("skipped", f"job {job_id}: no longer exists")
            return
        except SubmissionError as exc:
            self._count(
                "failed",
                f"job {job_id}: {exc.message}",
                audit=dict(verb=verb, job_id=job_id, result=f"not submitted: {exc.message}"),
            )
            return
        if attempt.batch_id:  # handed over before the process died: count it, never again
            if attempt.batch_id not in submission.output:
                submission.output += (
                    f"[{attempt.job.key} #{attempt.number}] {attempt.batch_id}"
                    " (found after the submitting process stopped)\n"
                )
                self.dirty.add(submission.stage_id)
            self._count(
                "done",
                audit=_audit_args(
                    verb,
                    job_id,
                    f"queued attempt #{attempt.number} as {attempt.batch_id}",
                    attempt=attempt,
                    extra={
                        "memory_mb": resources.memory_mb,
                        "walltime_s": resources.walltime_s,
                        "resources": resources.basis,
                    },
                ),
            )
            return
        try:
            result = backend.submit(job_spec_build(attempt=attempt))
        except SubmissionError as exc:
            self._submit_failed(attempt, submission, exc)
            self._count(
                "failed",
                f"{attempt.job.key}: {exc.message}",
                audit=dict(
                    verb=verb,
                    job_id=job_id,
                    result=f"submit failed: {exc.message}",
                    attempt=attempt,
                ),
            )
            return
        Attempt.objects.filter(pk=attempt.pk, batch_id="").update(batch_id=result.batch_id)
        submission.command += result.command + "\n"
        submission.output += f"[{attempt.job.key} #{attempt.number}] {result.output}\n"
        if not submission.external_id:
            submission.external_id = result.batch_id
        self.dirty.add(submission.stage_id)
        self._count(
            "done",
            audit=_audit_args(
                verb,
                job_id,
                f"queued attempt #{attempt.number} as {result.batch_id}",
                attempt=attempt,
                extra={
                    "memory_mb": resources.memory_mb,
                    "walltime_s": resources.walltime_s,
                    "resources": resources.basis,
                },
            ),
        )

    def _resume_attempt(self, attempt: Attempt, backend) -> tuple[Attempt, rules.Resources]:
        """Carry on with the attempt the dead run made for this job.

        - Handed over (it has a batch id): counted as done, never submitted again.
        - Not handed over, and the backend can tell (the local backend's
          batch_id file): adopted when its runner had started, else submitted now.
        - Not handed over, and the backend cannot tell but the attempt's
          directory exists: the submit may have reached the batch system, so it
          is ended as failed rather than risk running twice.
        - Otherwise: submitted now.
        """
        resources = rules.Resources(
            memory_mb=attempt.request_memory_mb,
            walltime_s=attempt.request_walltime_s,
            basis="as queued before the interruption",
        )
        if attempt.batch_id or attempt.status != Attempt.Status.QUEUED:
            if not attempt.batch_id:
                raise ActionRefused(f"attempt #{attempt.number} already ended", code="ended")
            return attempt, resources
        workdir = attempt_workdir(attempt.uid)
        recover = getattr(backend, "batch_id_in", None)
        if recover is not None:
            batch_id = recover(workdir)
            if batch_id:
                Attempt.objects.filter(pk=attempt.pk, batch_id="").update(batch_id=batch_id)
                attempt.batch_id = batch_id
            return attempt, resources
        if workdir.exists():
            attempt_end_from_batch(
                attempt=attempt,
                status=BatchStatus(
                    "",
                    BatchState.FAILED,
                    raw_state="submit_interrupted",
                    reason="the process submitting it stopped mid-submit",
                ),
                events=[],
                kind="submit_interrupted",
            )
            raise ActionRefused(
                f"attempt #{attempt.number} was interrupted mid-submit and ended as failed;"
                " retry it",
                code="submit_interrupted",
            )
        return attempt, resources

    # -- one job, under its lock

    def _queue(self, job_id: int, submission: Submission) -> tuple[Attempt, rules.Resources]:
        with transaction.atomic():
            job = (
                Job.objects.select_for_update(of=("self",))
                .select_related("stage__campaign__experiment")
                .get(pk=job_id)
            )
            if job.stage.campaign.experiment_id != self.action.experiment_id:
                raise ActionRefused("the job belongs to another experiment")
            allow_succeeded = False
            if self.action.kind == BulkAction.Kind.RECOVERY and job.good_attempt_id:
                missing = _missing_outputs(job)
                if missing:
                    production.attempt_fail_post_check(
                        attempt_id=job.good_attempt_id,
                        reason=f"declared outputs missing: {', '.join(sorted(missing))}",
                    )
                    job.refresh_from_db()
                else:
                    raise ActionRefused("the job has succeeded and has all its outputs")
            if self.action.kind == BulkAction.Kind.LAUNCH and job.attempt_count:
                raise ActionRefused("the job was already submitted")
            open_attempts = list(
                Attempt.objects.select_for_update().filter(job=job, status__in=OPEN_STATUSES)
            )
            liveness = hooks.attempt_liveness(attempt_ids=[a.pk for a in open_attempts])
            refusal = rules.retry_refusal(
                job=job,
                stage_state=job.stage.state,
                open_attempts=open_attempts,
                liveness=liveness,
                failure_class=hooks.failure_classes(job_ids=[job.pk]).get(job.pk),
                force=self.force,
                allow_succeeded=allow_succeeded,
            )
            if refusal is not None:
                raise ActionRefused(refusal.message, code=refusal.code)
            for stale in open_attempts:
                attempt_close_stale(
                    attempt=stale,
                    verdict=liveness[stale.pk],
                    actor_label=self.action.actor_label,
                )
            last = Attempt.objects.filter(job=job).order_by("-number").first()
            resources = rules.resources_for_retry(
                stage=job.stage,
                last_attempt=last,
                more=self.more,
                suggestion=hooks.scout_resource_suggestion(stage_id=job.stage_id)
                if self.more
                else None,
            )
            try:
                attempt = production.attempt_queue(job=job, submission=submission)
            except IntegrityError:
                # The constraint caught what the lock should have: say so, never crash.
                raise ActionRefused(
                    "the job already has a queued or running attempt", code="open_attempt"
                ) from None
            Attempt.objects.filter(pk=attempt.pk).update(
                request_memory_mb=resources.memory_mb, request_walltime_s=resources.walltime_s
            )
            attempt.request_memory_mb = resources.memory_mb
            attempt.request_walltime_s = resources.walltime_s
            attempt.job = job
        return attempt, resources

    def _submission_for(self, stage: Stage) -> Submission:
        submission = self.submissions.get(stage.pk)
        if submission is None:
            submission = Submission.objects.create(
                stage=stage,
                kind={
                    BulkAction.Kind.RETRY: Submission.Kind.RETRY,
                    BulkAction.Kind.RECOVERY: Submission.Kind.RECOVERY,
                    BulkAction.Kind.LAUNCH: Submission.Kind.INITIAL,
                }[self.action.kind],
                state=Submission.State.PENDING,
                launched_by=self.action.created_by,
                backend=stage_backend_name(stage),
                parent=stage_initial_submission(stage),
                action=self.action,
            )
            self.submissions[stage.pk] = submission
        return submission

    def _runnable(self, stage: Stage) -> None:
        if stage.pk not in self.runnable:
            self.runnable[stage.pk] = ConfigSnapshot.objects.filter(
                stage=stage, command__gt=""
            ).exists()
        if not self.runnable[stage.pk]:
            raise SubmissionError(f"stage {stage} has no command: take a config snapshot first")

    def _backend(self, name: str):
        if name not in self.backends:
            self.backends[name] = backend_get(name)
        return self.backends[name]

    def _submit_failed(self, attempt: Attempt, submission: Submission, exc: SubmissionError):
        submission.command += (exc.command or f"# {attempt.job.key}: not submitted") + "\n"
        submission.output += f"[{attempt.job.key} #{attempt.number}] ERROR {exc.message}"
        submission.output += f": {exc.output}\n" if exc.output else "\n"
        self.dirty.add(submission.stage_id)
        attempt_end_from_batch(
            attempt=attempt,
            status=BatchStatus(
                "", BatchState.FAILED, raw_state="submit_failed", reason=exc.message
            ),
            events=[],
            kind="submit_failed",
            detail=exc.output,
        )

    # -- bookkeeping

    def _count(self, what: str, message: str = "", audit: dict | None = None) -> None:
        """Count one job's outcome and write its audit entry in one transaction:
        a resumed run finds a job either counted and audited, or neither."""
        setattr(self.counts, what, getattr(self.counts, what) + 1)
        with transaction.atomic():
            fields = {what: F(what) + 1}
            if message:
                self.action.messages = (self.action.messages + [message])[-MESSAGES_MAX:]
                fields["messages"] = self.action.messages
            BulkAction.objects.filter(pk=self.action.pk).update(**fields)
            if audit is not None:
                self._audit_job(**audit)

    def _audit_job(self, verb, job_id, result, attempt=None, extra=None):
        production.audit_record(
            actor=self.action.created_by,
            actor_label=self.action.actor_label,
            action=verb,
            experiment=self.action.experiment,
            target=Job(pk=job_id),
            params={
                "action": self.action.pk,
                "force": self.force,
                "more_resources": self.more,
                **({"attempt": str(attempt.uid)} if attempt is not None else {}),
                **(extra or {}),
            },
            result=result,
        )

    def _save_submissions(self) -> None:
        for stage_id in self.dirty:
            s = self.submissions[stage_id]
            Submission.objects.filter(pk=s.pk).update(
                command=s.command, output=s.output, external_id=s.external_id
            )
        self.dirty.clear()

    def _finish(self, *, total: int) -> None:
        self._save_submissions()
        # The counters in the row: a resumed run adds to what the dead one counted.
        c = BulkAction.objects.only("done", "failed", "skipped").get(pk=self.action.pk)
        now = timezone.now()
        result = f"{c.done} submitted, {c.failed} failed, {c.skipped} skipped of {total}"
        state = BulkAction.State.FAILED if c.done == 0 and c.failed else BulkAction.State.DONE
        finished = BulkAction.objects.filter(
            pk=self.action.pk, state=BulkAction.State.RUNNING
        ).update(state=state, finished_at=now, result=result, lease_until=None)
        if not finished:  # cancelled while running
            result = f"stopped: {result}"
            BulkAction.objects.filter(pk=self.action.pk).update(result=result)
        for s in self.submissions.values():
            has_attempts = Attempt.objects.filter(submission=s).exclude(batch_id="").exists()
            Submission.objects.filter(pk=s.pk).update(
                state=Submission.State.SUBMITTED if has_attempts else Submission.State.FAILED,
                launched_at=self.action.started_at or now,
            )
        if self.action.kind in (BulkAction.Kind.LAUNCH, BulkAction.Kind.RECOVERY) or total > 1:
            production.audit_record(
                actor=self.action.created_by,
                actor_label=self.action.actor_label,
                action=f"{self.action.kind}.finished",
                experiment=self.action.experiment,
                target=self.action.stage or self.action,
                params={"action": self.action.pk, "total": total},
                result=result,
            )


def _audit_args(verb, job_id, result, attempt=None, extra=None) -> dict:
    return {"verb": verb, "job_id": job_id, "result": result, "attempt": attempt, "extra": extra}


def _missing_outputs(job: Job) -> set[str]:
    expected = {str(o) for o in job.expected_outputs or []}
    if not expected or job.good_attempt_id is None:
        return set()
    present = set(
        OutputFile.objects.filter(attempt_id=job.good_attempt_id).values_list("name", flat=True)
    )
    return expected - present


def parent_outputs_not_inputs(stage: Stage) -> list[str]:
    """Good outputs of the stage's parents that are not yet one of its jobs
    (a dependent stage's job key is its input's name). One anti-join query: it
    runs after every parent attempt end of an autolaunch stage."""
    parents = list(stage.depends_on.values_list("pk", flat=True))
    if not parents:
        return []
    return list(
        OutputFile.objects.filter(stage_id__in=parents, attempt_id=F("job__good_attempt_id"))
        .exclude(name__in=Job.objects.filter(stage=stage).values("key"))
        .order_by("name")
        .values_list("name", flat=True)
        .distinct()
    )


def _launch_prepare(stage: Stage) -> list[int]:
    """Mark the stage active, derive a dependent stage's inputs (one job per good
    output of its parents), and list the jobs never submitted."""
    Stage.objects.filter(pk=stage.pk, state=Stage.State.PENDING).update(state=Stage.State.ACTIVE)
    names = parent_outputs_not_inputs(stage)
    if names:
        Job.objects.bulk_create(
            [Job(stage=stage, key=name[:512]) for name in names], ignore_conflicts=True
        )
    return list(
        Job.objects.filter(stage=stage, attempt_count=0, state=Job.State.PENDING)
        .order_by("key")
        .values_list("pk", flat=True)
    )
