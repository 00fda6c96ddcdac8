"""Reads of the progress app, for the campaign dashboard, the stage page, the
reports and the API. Other apps use these:

- stage_missing_inputs(stage_id) -> list[str]: expected inputs with no good
  output (recovery submits them);
- stage_resource_suggestion(stage_id) -> ResourceSuggestion, and
  scout_resource_suggestion(stage_id) -> {"memory_mb", "walltime_s"} | None
  (the action layer's "retry with more memory / time").
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

from django.db.models import Count, QuerySet
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from prodmon.models import (
    Attempt,
    Campaign,
    InputSnapshot,
    Job,
    Notification,
    NotificationSubscription,
    ReportSubscription,
    Stage,
    StageProgressSample,
)
from prodmon.progress.completeness import (  # noqa: F401 - the public read API
    Completeness,
    MergeCheck,
    stage_completeness,
    stage_duplicate_inputs,
    stage_merge_check,
    stage_missing_inputs,
)
from prodmon.progress.estimates import (  # noqa: F401
    CampaignEstimate,
    EtaView,
    campaign_estimate,
    campaigns_estimate,
    job_type_list,
    reprocessing_estimate,
)
from prodmon.progress.scouts import (  # noqa: F401
    ResourceSuggestion,
    scout_resource_suggestion,
    stage_resource_suggestion,
)
from prodmon.selectors import JOB_STATES, StageProgress

SERIES_MAX_POINTS = 400
SERIES_DAYS = 14  # the charts show the last two weeks


def stage_get(*, pk: int, experiment_ids: set[int]) -> Stage | None:
    return (
        Stage.objects.select_related("campaign__experiment")
        .prefetch_related("depends_on", "dependents")
        .filter(pk=pk, campaign__experiment_id__in=experiment_ids)
        .first()
    )


def stage_input_snapshots(*, stage_id: int, limit: int = 10) -> list[InputSnapshot]:
    return list(InputSnapshot.objects.filter(stage_id=stage_id).order_by("-declared_at")[:limit])


# --- the dependency picture --------------------------------------------------------------


def pipeline_levels(progress: list[StageProgress]) -> list[list[StageProgress]]:
    """Stages by dependency depth: level 0 depends on nothing in the campaign,
    level n on something at level n-1."""
    by_id = {p.stage.pk: p for p in progress}
    depth: dict[int, int] = {}

    def level(p: StageProgress, trail: frozenset = frozenset()) -> int:
        if p.stage.pk in depth:
            return depth[p.stage.pk]
        parents = [
            by_id[d.pk] for d in p.stage.depends_on.all() if d.pk in by_id and d.pk not in trail
        ]
        value = 1 + max((level(q, trail | {p.stage.pk}) for q in parents), default=-1)
        depth[p.stage.pk] = value
        return value

    levels: dict[int, list[StageProgress]] = defaultdict(list)
    for p in progress:
        levels[level(p)].append(p)
    return [levels[k] for k in sorted(levels)]


# --- per-site counts ----------------------------------------------------------------------


@dataclass
class SiteCount:
    site: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def campaign_site_counts(*, campaign: Campaign) -> list[SiteCount]:
    from prodmon.selectors import page_cached

    return page_cached(
        f"sites:{campaign.pk}:{campaign.created_at.timestamp():.6f}",
        lambda: _campaign_site_counts(campaign=campaign),
    )


def _campaign_site_counts(*, campaign: Campaign) -> list[SiteCount]:
    """Jobs of the campaign by the site of their latest attempt and by state,
    as the job table's site filter counts them (Job.last_site, kept by the
    latest-attempt triggers: no per-job subquery)."""
    rows = (
        Job.objects.filter(stage__campaign=campaign)
        .values("last_site", "state")
        .annotate(n=Count("id"))
        .order_by()
    )
    sites: dict[str, SiteCount] = {}
    for row in rows:
        site = row["last_site"] or ""
        entry = sites.setdefault(site, SiteCount(site=site, counts=dict.fromkeys(JOB_STATES, 0)))
        entry.counts[row["state"]] += row["n"]
    return sorted(sites.values(), key=lambda s: (s.site == "", -s.total, s.site))


# --- history for the charts ------------------------------------------------------------------


def _thin(points: list, limit: int = SERIES_MAX_POINTS) -> list:
    if len(points) <= limit:
        return points
    step = len(points) / limit
    kept = [points[int(i * step)] for i in range(limit)]
    if kept[-1] is not points[-1]:
        kept.append(points[-1])
    return kept


def stage_progress_series(
    *, progress: list[StageProgress], now: dt.datetime | None = None
) -> dict[int, list[tuple[dt.datetime, float]]]:
    """Percent complete over time per stage over the last two weeks, from the
    progress samples; a stage without samples falls back to its good
    attempts' end times (counted from zero within the range). Each series
    ends at now with the current value. Percent of today's denominator, so
    the curves are comparable."""
    now = now or timezone.now()
    out: dict[int, list[tuple[dt.datetime, float]]] = {}
    ids = [p.stage.pk for p in progress]
    samples: dict[int, list] = defaultdict(list)
    since = now - dt.timedelta(days=SERIES_DAYS)
    for sid, at, succeeded in (
        StageProgressSample.objects.filter(stage_id__in=ids, at__gte=since)
        .order_by("stage_id", "at")
        .values_list("stage_id", "at", "succeeded")
        .iterator()
    ):
        samples[sid].append((at, succeeded))
    missing = [sid for sid in ids if not samples.get(sid)]
    before: dict[int, int] = {}
    if missing:
        before = dict(
            Job.objects.filter(stage_id__in=missing, good_attempt__ended_at__lt=since)
            .values("stage_id")
            .annotate(n=Count("id"))
            .values_list("stage_id", "n")
        )
        ends = (
            Job.objects.filter(stage_id__in=missing, good_attempt__ended_at__gte=since)
            .order_by("good_attempt__ended_at")
            .values_list("stage_id", "good_attempt__ended_at")
        )
        running: dict[int, int] = defaultdict(int, before)
        for sid, at in ends.iterator():
            running[sid] += 1
            samples[sid].append((at, running[sid]))
    for p in progress:
        denominator = p.denominator or 1
        points = [(at, 100.0 * n / denominator) for at, n in samples.get(p.stage.pk, [])]
        if points and p.stage.pk in missing:
            # The curve starts flat at what was done before the first end shown.
            start = 100.0 * before.get(p.stage.pk, 0) / denominator
            points.insert(0, (points[0][0], start))
        points.append((now, p.pct_complete))
        out[p.stage.pk] = _thin(points)
    return out


@dataclass
class Throughput:
    bucket: str  # "hour" or "day"
    # stage id -> {bucket start: (good, failed)}
    rows: dict[int, dict[dt.datetime, list[int]]]


def campaign_throughput(
    *, campaign: Campaign, now: dt.datetime | None = None, days: int = 14
) -> Throughput:
    if now is not None:
        return _campaign_throughput(campaign=campaign, now=now, days=days)
    from prodmon.selectors import page_cached

    return page_cached(
        f"throughput:{campaign.pk}:{campaign.created_at.timestamp():.6f}:{days}",
        lambda: _campaign_throughput(campaign=campaign, now=None, days=days),
    )


def _campaign_throughput(*, campaign: Campaign, now: dt.datetime | None, days: int) -> Throughput:
    """Attempt ends per hour (per day for histories longer than 3 days), by
    stage: good ones and failed ones (duplicate completions count as neither)."""
    now = now or timezone.now()
    since = now - dt.timedelta(days=days)
    qs = Attempt.objects.filter(
        job__stage__campaign=campaign, status__in=Attempt.ENDED, ended_at__gte=since
    )
    first = qs.order_by("ended_at").values_list("ended_at", flat=True).first()
    bucket = "day" if first is not None and now - first > dt.timedelta(days=3) else "hour"
    trunc = TruncDay if bucket == "day" else TruncHour
    rows: dict[int, dict[dt.datetime, list[int]]] = defaultdict(dict)
    data = (
        qs.filter(is_duplicate_completion=False)
        .annotate(b=trunc("ended_at"))
        .values("job__stage_id", "b", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in data:
        slot = rows[row["job__stage_id"]].setdefault(row["b"], [0, 0])
        slot[0 if row["status"] == Attempt.Status.SUCCEEDED else 1] += row["n"]
    return Throughput(bucket=bucket, rows=dict(rows))


# --- subscriptions -------------------------------------------------------------------------


def notification_subscription_map(*, user, experiment_ids: set[int]) -> dict:
    return {
        s.experiment_id: s
        for s in NotificationSubscription.objects.filter(
            user=user, experiment_id__in=experiment_ids
        )
    }


def report_subscription_ids(*, user, experiment_ids: set[int]) -> set[int]:
    return set(
        ReportSubscription.objects.filter(user=user, experiment_id__in=experiment_ids).values_list(
            "experiment_id", flat=True
        )
    )


def notification_list(*, user, limit: int = 30) -> QuerySet[Notification]:
    return (
        Notification.objects.filter(subscription__user=user)
        .select_related("subscription__experiment")
        .order_by("-created_at")[:limit]
    )
