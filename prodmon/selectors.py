"""Reads of the production model, always scoped to what the caller may see."""

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db.models import Count, F, QuerySet

from prodmon.models import (
    Attempt,
    Campaign,
    ConfigSnapshot,
    Experiment,
    Job,
    Membership,
    OutputFile,
    Role,
    Stage,
)

JOB_STATES = [s.value for s in Job.State]


def page_cached(key: str, compute):
    """Expensive aggregates of the campaign pages, kept PRODMON_PAGE_CACHE_SECONDS
    (60; 0: off). At a million jobs a count or a scan of a campaign's attempts
    costs far more than the page; the pages say their figures may be that old."""
    ttl = int(getattr(settings, "PRODMON_PAGE_CACHE_SECONDS", 60))
    if ttl <= 0:
        return compute()
    key = f"prodmon:page:{key}"
    found = cache.get(key)
    if found is None:
        found = compute()
        cache.set(key, found, ttl)
    return found


def experiment_ids_for_user(*, user: AbstractBaseUser, min_role: int = Role.VIEWER) -> set[int]:
    if not user.is_authenticated:
        return set()
    if user.is_superuser:
        return set(Experiment.objects.values_list("pk", flat=True))
    return set(
        Membership.objects.filter(user=user, role__gte=min_role).values_list(
            "experiment_id", flat=True
        )
    )


def user_role(*, user: AbstractBaseUser, experiment_id: int) -> int | None:
    """The user's role in an experiment, or None. Superusers are admins everywhere."""
    if not user.is_authenticated:
        return None
    if user.is_superuser:
        return Role.ADMIN
    return (
        Membership.objects.filter(user=user, experiment_id=experiment_id)
        .values_list("role", flat=True)
        .first()
    )


def experiment_list(*, user: AbstractBaseUser) -> QuerySet[Experiment]:
    return Experiment.objects.filter(pk__in=experiment_ids_for_user(user=user))


def campaign_list(*, experiment_ids: set[int], state: str | None = None) -> QuerySet[Campaign]:
    qs = Campaign.objects.filter(experiment_id__in=experiment_ids).select_related("experiment")
    if state:
        qs = qs.filter(state=state)
    return qs


@dataclass
class StageProgress:
    stage: Stage
    counts: dict[str, int]
    total: int
    expected: int

    def pct(self, state: str) -> float:
        return 100.0 * self.counts.get(state, 0) / self.denominator if self.denominator else 0.0

    @property
    def denominator(self) -> int:
        return max(self.expected, self.total)

    @property
    def pct_complete(self) -> float:
        return self.pct(Job.State.SUCCEEDED)

    @property
    def is_complete(self) -> bool:
        return self.denominator > 0 and self.pct_complete >= self.stage.completion_pct

    def bars(self) -> list[tuple[str, int, float]]:
        """(state, count, percent of expected) for the progress bar, in display order."""
        order = ["succeeded", "failed", "running", "queued", "pending"]
        return [(s, self.counts.get(s, 0), self.pct(s)) for s in order]


def stage_job_counts(*, stage_ids: list[int]) -> dict[int, dict[str, int]]:
    return page_cached(
        "counts:" + ",".join(map(str, sorted(stage_ids))),
        lambda: _stage_job_counts(stage_ids=stage_ids),
    )


def _stage_job_counts(*, stage_ids: list[int]) -> dict[int, dict[str, int]]:
    counts: dict[int, dict[str, int]] = {sid: dict.fromkeys(JOB_STATES, 0) for sid in stage_ids}
    rows = (
        Job.objects.filter(stage_id__in=stage_ids)
        .values("stage_id", "state")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in rows:
        counts[row["stage_id"]][row["state"]] = row["n"]
    return counts


def stage_progress_list(*, stages: list[Stage]) -> list[StageProgress]:
    counts = stage_job_counts(stage_ids=[s.pk for s in stages])
    return [
        StageProgress(
            stage=s,
            counts=counts[s.pk],
            total=sum(counts[s.pk].values()),
            expected=s.expected_jobs,
        )
        for s in stages
    ]


def campaign_progress(*, campaigns: list[Campaign]) -> dict[int, list[StageProgress]]:
    stages = list(
        Stage.objects.filter(campaign__in=campaigns)
        .prefetch_related("depends_on")
        .order_by("campaign_id", "order", "name")
    )
    progress = stage_progress_list(stages=stages)
    out: dict[int, list[StageProgress]] = {c.pk: [] for c in campaigns}
    for item in progress:
        out[item.stage.campaign_id].append(item)
    return out


def job_list(*, experiment_ids: set[int]) -> QuerySet[Job]:
    return Job.objects.filter(stage__campaign__experiment_id__in=experiment_ids).select_related(
        "stage__campaign__experiment", "good_attempt"
    )


def attempt_list(*, experiment_ids: set[int]) -> QuerySet[Attempt]:
    return Attempt.objects.filter(
        job__stage__campaign__experiment_id__in=experiment_ids
    ).select_related("job__stage__campaign__experiment", "node")


def attempt_get(*, uid, experiment_ids: set[int]) -> Attempt | None:
    return attempt_list(experiment_ids=experiment_ids).filter(uid=uid).first()


def config_snapshot_get(*, stage_id: int, experiment_ids: set[int]) -> ConfigSnapshot | None:
    return (
        ConfigSnapshot.objects.select_related("stage__campaign")
        .filter(stage_id=stage_id, stage__campaign__experiment_id__in=experiment_ids)
        .first()
    )


# --- portal pages ---------------------------------------------------------------


def campaign_get(*, pk: int, experiment_ids: set[int]) -> Campaign | None:
    return campaign_list(experiment_ids=experiment_ids).filter(pk=pk).first()


def stage_list(*, experiment_ids: set[int]) -> QuerySet[Stage]:
    return (
        Stage.objects.filter(campaign__experiment_id__in=experiment_ids)
        .select_related("campaign__experiment")
        .order_by("campaign__experiment__name", "campaign__name", "order", "name")
    )


def stage_config_map(*, stage_ids: list[int]) -> dict[int, ConfigSnapshot]:
    """Config snapshots by stage id; stages without one are simply absent."""
    return {c.stage_id: c for c in ConfigSnapshot.objects.filter(stage_id__in=stage_ids)}


def campaign_failed_attempt_list(*, campaign: Campaign, limit: int = 15) -> list[Attempt]:
    """The most recently ended failed attempts of a campaign, newest first."""
    return page_cached(
        f"failed:{campaign.pk}:{campaign.created_at.timestamp():.6f}:{limit}",
        lambda: list(
            Attempt.objects.filter(job__stage__campaign=campaign, status=Attempt.Status.FAILED)
            .select_related("job__stage", "node")
            .order_by(F("ended_at").desc(nulls_last=True), "-pk")[:limit]
        ),
    )


def job_table_list(*, experiment_ids: set[int]) -> QuerySet[Job]:
    """Jobs with their latest attempt's facts annotated as `last_*`.

    The latest attempt is Job.last_attempt, kept by database triggers
    (prodmon.latest_attempt) together with the denormalised `last_site`,
    `last_activity_at` and the generated `last_update` the table sorts by, so
    a page of jobs is one index scan plus one join per row, at any size.
    """
    return job_list(experiment_ids=experiment_ids).annotate(
        last_attempt_uid=F("last_attempt__uid"),
        last_status=F("last_attempt__status"),
        last_exit_code=F("last_attempt__exit_code"),
        last_signal=F("last_attempt__signal"),
        last_hostname=F("last_attempt__node__hostname"),
    )


def job_get(*, pk: int, experiment_ids: set[int]) -> Job | None:
    return job_list(experiment_ids=experiment_ids).filter(pk=pk).first()


def job_attempt_list(*, job: Job) -> QuerySet[Attempt]:
    return Attempt.objects.filter(job=job).select_related("node").order_by("number")


def attempt_output_list(*, attempt: Attempt) -> QuerySet[OutputFile]:
    return OutputFile.objects.filter(attempt=attempt).order_by("name")


def experiment_list_by_ids(*, experiment_ids: set[int]) -> QuerySet[Experiment]:
    return Experiment.objects.filter(pk__in=experiment_ids)
