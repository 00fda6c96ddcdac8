"""Reads of the action layer, scoped to the experiments the caller may see."""

from collections import Counter
from dataclasses import dataclass, field

from django.db.models import F, Q, QuerySet

from prodmon import selectors as production
from prodmon.actions import hooks, rules
from prodmon.filters import JobFilter
from prodmon.models import (
    Attempt,
    AuditEntry,
    BatchEvent,
    BulkAction,
    Job,
    OutputFile,
    Role,
    Stage,
    Submission,
)
from prodmon.submission.base import backend_name_for

OPEN_STATUSES = (Attempt.Status.QUEUED, Attempt.Status.RUNNING)
RECOVERY_TYPES = {
    "failed": "Failed jobs: ended without a good attempt",
    "lost": "Lost or hung jobs: an open attempt the liveness check gave up on",
    "missing_outputs": "Succeeded jobs whose declared outputs are missing",
    "all": "Every input without a good output (all of the above)",
}
RECOVERY_TAB_LABELS = {
    "failed": "Failed",
    "lost": "Lost or hung",
    "missing_outputs": "Missing outputs",
    "all": "All",
}


# --- actions and submissions -----------------------------------------------------


def bulk_action_get(*, pk: int, experiment_ids: set[int]) -> BulkAction | None:
    return (
        BulkAction.objects.filter(pk=pk, experiment_id__in=experiment_ids)
        .select_related("experiment", "stage__campaign", "created_by")
        .first()
    )


def bulk_action_list(*, experiment_ids: set[int], stage: Stage | None = None, limit: int = 20):
    qs = BulkAction.objects.filter(experiment_id__in=experiment_ids).select_related(
        "stage__campaign"
    )
    if stage is not None:
        qs = qs.filter(stage=stage)
    return list(qs.order_by("-created_at", "-pk")[:limit])


def action_submission_list(*, action: BulkAction) -> list[Submission]:
    return list(action.submissions.select_related("stage__campaign").order_by("pk"))


def submission_get(*, pk: int, experiment_ids: set[int]) -> Submission | None:
    return (
        Submission.objects.filter(pk=pk, stage__campaign__experiment_id__in=experiment_ids)
        .select_related("stage__campaign__experiment", "launched_by", "parent", "action")
        .first()
    )


def submission_attempt_list(*, submission: Submission) -> list[Attempt]:
    return list(
        Attempt.objects.filter(submission=submission)
        .select_related("job", "node")
        .order_by("job__key", "number")
    )


def stage_get(*, pk: int, experiment_ids: set[int]) -> Stage | None:
    return (
        Stage.objects.filter(pk=pk, campaign__experiment_id__in=experiment_ids)
        .select_related("campaign__experiment")
        .prefetch_related("depends_on")
        .first()
    )


def stage_submission_list(*, stage: Stage, limit: int = 30) -> list[Submission]:
    return list(
        Submission.objects.filter(stage=stage)
        .select_related("launched_by", "action", "parent")
        .order_by("-launched_at", "-pk")[:limit]
    )


def stage_backend(*, stage: Stage) -> tuple[str, str]:
    """(backend name, where it was chosen: "stage", "experiment" or "default")."""
    if stage.submission_backend:
        return stage.submission_backend, "stage"
    if stage.campaign.experiment.submission_backend:
        return stage.campaign.experiment.submission_backend, "experiment"
    return backend_name_for(), "default"


def stage_open_attempt_count(*, stage: Stage) -> int:
    return Attempt.objects.filter(job__stage=stage, status__in=OPEN_STATUSES).count()


def attempt_batch_event_list(*, attempt: Attempt) -> list[BatchEvent]:
    return list(BatchEvent.objects.filter(attempt=attempt).order_by("seq"))


# --- retry ------------------------------------------------------------------------


@dataclass
class RetrySelection:
    """The jobs a bulk retry's filter matches, and why it may match nothing."""

    filter: JobFilter
    jobs: QuerySet
    error: str = ""
    error_class: str = ""


def retry_selection(*, data, experiment_ids: set[int]) -> RetrySelection:
    """Jobs matching the job table's filters (stage, state, node, site, exit code,
    campaign, experiment, key), plus `error_class` when triage provides one."""
    data = data.copy()
    if not data.get("state"):
        data["state"] = Job.State.FAILED
    jobs_filter = JobFilter(
        data,
        production.job_table_list(experiment_ids=experiment_ids),
        experiment_ids=experiment_ids,
    )
    if not jobs_filter.is_valid():
        return RetrySelection(jobs_filter, Job.objects.none(), error="some filters are invalid")
    jobs = jobs_filter.qs
    error_class = (data.get("error_class") or "").strip()
    if error_class:
        ids = hooks.error_class_job_ids(error_class=error_class, experiment_ids=experiment_ids)
        jobs = jobs.filter(pk__in=ids)
    return RetrySelection(jobs_filter, jobs, error_class=error_class)


@dataclass
class RetryPreview:
    matched: int
    eligible: list[int]
    refused: Counter = field(default_factory=Counter)  # label -> count
    experiment_ids: set[int] = field(default_factory=set)
    stage_ids: set[int] = field(default_factory=set)

    @property
    def refused_list(self) -> list[tuple[str, int]]:
        return self.refused.most_common()


def retry_preview(*, jobs, force: bool, allow_succeeded: bool = False) -> RetryPreview:
    """Apply the retry rules to every matched job, in a few queries: the exact
    count the confirmation page shows, and the ids the action will run."""
    rows = list(jobs.select_related("stage__campaign").order_by("pk"))
    ids = [j.pk for j in rows]
    open_by_job: dict[int, list[Attempt]] = {}
    for a in Attempt.objects.filter(job_id__in=ids, status__in=OPEN_STATUSES):
        open_by_job.setdefault(a.job_id, []).append(a)
    liveness = hooks.attempt_liveness(
        attempt_ids=[a.pk for group in open_by_job.values() for a in group]
    )
    classes = hooks.failure_classes(job_ids=ids)
    preview = RetryPreview(matched=len(rows), eligible=[])
    for job in rows:
        refusal = rules.retry_refusal(
            job=job,
            stage_state=job.stage.state,
            open_attempts=open_by_job.get(job.pk, []),
            liveness=liveness,
            failure_class=classes.get(job.pk),
            force=force,
            allow_succeeded=allow_succeeded,
        )
        if refusal is None:
            preview.eligible.append(job.pk)
            preview.experiment_ids.add(job.stage.campaign.experiment_id)
            preview.stage_ids.add(job.stage_id)
        else:
            preview.refused[refusal.label] += 1
    return preview


@dataclass
class RetryPanel:
    """What the job and attempt pages offer: a retry button, or why not."""

    role: int | None
    refusal: rules.Refusal | None
    can_retry: bool
    can_force: bool
    lost_attempts: list[Attempt]
    failure_class: dict | None


def job_retry_panel(*, job: Job, role: int | None) -> RetryPanel:
    open_attempts = list(Attempt.objects.filter(job=job, status__in=OPEN_STATUSES))
    liveness = hooks.attempt_liveness(attempt_ids=[a.pk for a in open_attempts])
    failure = hooks.failure_classes(job_ids=[job.pk]).get(job.pk)
    refusal = rules.retry_refusal(
        job=job,
        stage_state=job.stage.state,
        open_attempts=open_attempts,
        liveness=liveness,
        failure_class=failure,
        force=False,
    )
    is_shifter = role is not None and role >= Role.SHIFTER
    is_manager = role is not None and role >= Role.MANAGER
    return RetryPanel(
        role=role,
        refusal=refusal,
        can_retry=is_shifter and refusal is None,
        can_force=is_manager and refusal is not None and refusal.code == "permanent",
        lost_attempts=[a for a in open_attempts if liveness.get(a.pk) in hooks.LOST_VERDICTS],
        failure_class=failure,
    )


# --- recovery and launch ------------------------------------------------------------


@dataclass(frozen=True)
class RecoveryItem:
    job: Job
    reason: str  # failed, lost, missing_outputs
    detail: str = ""

    @property
    def label(self) -> str:
        return {"missing_outputs": "outputs missing"}.get(self.reason, self.reason)


def recovery_candidates(*, stage: Stage, recovery_type: str) -> list[RecoveryItem]:
    """The stage's inputs with no good output, by POMS-style recovery type."""
    if recovery_type not in RECOVERY_TYPES:
        raise ValueError(f"unknown recovery type {recovery_type!r}")
    want = {"failed", "lost", "missing_outputs"} if recovery_type == "all" else {recovery_type}
    items: list[RecoveryItem] = []
    if "failed" in want:
        failed = (
            Job.objects.filter(stage=stage, state=Job.State.FAILED, good_attempt__isnull=True)
            .exclude(attempts__status__in=OPEN_STATUSES)
            .order_by("key")
        )
        items += [RecoveryItem(j, "failed") for j in failed]
    if "lost" in want:
        open_attempts = list(
            Attempt.objects.filter(job__stage=stage, status__in=OPEN_STATUSES).select_related("job")
        )
        liveness = hooks.attempt_liveness(attempt_ids=[a.pk for a in open_attempts])
        seen = set()
        for a in open_attempts:
            verdict = liveness.get(a.pk)
            if verdict in hooks.LOST_VERDICTS and a.job_id not in seen:
                seen.add(a.job_id)
                items.append(RecoveryItem(a.job, "lost", f"attempt #{a.number} {verdict}"))
    if "missing_outputs" in want:
        jobs = list(
            Job.objects.filter(stage=stage, good_attempt__isnull=False)
            .exclude(expected_outputs=[])
            .order_by("key")
        )
        present: dict[int, set[str]] = {}
        for attempt_id, name in OutputFile.objects.filter(
            attempt_id__in=[j.good_attempt_id for j in jobs]
        ).values_list("attempt_id", "name"):
            present.setdefault(attempt_id, set()).add(name)
        for j in jobs:
            missing = {str(o) for o in j.expected_outputs} - present.get(j.good_attempt_id, set())
            if missing:
                items.append(
                    RecoveryItem(j, "missing_outputs", "missing: " + ", ".join(sorted(missing)))
                )
    return items


@dataclass
class LaunchPreview:
    never_submitted: int
    new_inputs: int  # parents' good outputs that are not jobs of this stage yet


def launch_preview(*, stage: Stage) -> LaunchPreview:
    never = Job.objects.filter(stage=stage, attempt_count=0, state=Job.State.PENDING).count()
    parents = list(stage.depends_on.all())
    new_inputs = 0
    if parents:
        existing = Job.objects.filter(stage=stage).values("key")
        new_inputs = (
            OutputFile.objects.filter(stage__in=parents, attempt_id=F("job__good_attempt_id"))
            .exclude(name__in=existing)
            .values("name")
            .distinct()
            .count()
        )
    return LaunchPreview(never_submitted=never, new_inputs=new_inputs)


# --- audit ------------------------------------------------------------------------


def audit_list(
    *,
    experiment_ids: set[int],
    include_global: bool = False,
    experiment_id: int | None = None,
    actor: str = "",
    action: str = "",
) -> QuerySet[AuditEntry]:
    scope = Q(experiment_id__in=experiment_ids)
    if include_global:
        scope |= Q(experiment__isnull=True)
    qs = AuditEntry.objects.filter(scope).select_related("experiment")
    if experiment_id:
        qs = qs.filter(experiment_id=experiment_id)
    if actor:
        qs = qs.filter(actor_label__icontains=actor)
    if action:
        qs = qs.filter(Q(action=action) | Q(action__startswith=f"{action}."))
    return qs.order_by("-created_at", "-pk")


def audit_action_names(*, experiment_ids: set[int], include_global: bool = False) -> list[str]:
    return list(
        audit_list(experiment_ids=experiment_ids, include_global=include_global)
        .order_by("action")
        .values_list("action", flat=True)
        .distinct()
    )


def audit_for_action(*, action: BulkAction, limit: int = 100) -> list[AuditEntry]:
    """The request itself and what it did to each job (entries naming it)."""
    return list(
        AuditEntry.objects.filter(
            Q(target_type="bulkaction", target_id=str(action.pk)) | Q(params__action=action.pk)
        ).order_by("-created_at", "-pk")[:limit]
    )


def audit_for(*, targets: list[tuple[str, object]], limit: int = 50) -> list[AuditEntry]:
    """Entries about any of these objects, newest first: ("job", 12), ("attempt", 40)."""
    if not targets:
        return []
    cond = Q()
    for target_type, target_id in targets:
        cond |= Q(target_type=target_type, target_id=str(target_id))
    return list(AuditEntry.objects.filter(cond).order_by("-created_at", "-pk")[:limit])
