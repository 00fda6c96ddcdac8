"""Completion estimates from the database: build the estimator's inputs
(prodmon.progress.eta.StageSnapshot) from jobs and attempts, run it, and
present the answer with datetimes.

Also the "how long would reprocessing N inputs of this job type take"
estimator, from the wall times of good attempts of that job type.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

from django.core.cache import cache
from django.db.models import Avg, Count, F, Min, Q, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from prodmon.models import Attempt, Campaign, Job, Stage
from prodmon.progress import eta as eta_core
from prodmon.progress.conf import setting
from prodmon.selectors import stage_job_counts

RECENT_ENDS = 500
INACTIVE_STAGE_STATES = (Stage.State.HELD, Stage.State.ABORTED)


def _ts(value: dt.datetime) -> float:
    return value.timestamp()


def _dt(value: float | None) -> dt.datetime | None:
    if value is None or math.isinf(value):
        return None
    return dt.datetime.fromtimestamp(value, tz=dt.UTC)


def eta_params() -> eta_core.EtaParams:
    return eta_core.EtaParams(
        window_s=float(setting("PRODMON_ETA_WINDOW_HOURS")) * 3600,
        min_ends=int(setting("PRODMON_ETA_MIN_ENDS")),
        recent_ends=RECENT_ENDS,
    )


# --- presentation --------------------------------------------------------------------


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(int(round(seconds)), 0)
    days, rem = divmod(seconds, 86400)
    hours, rem = divmod(rem, 3600)
    minutes = rem // 60
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m"


@dataclass
class EtaView:
    """An estimate as the pages and the API show it."""

    status: str
    now: dt.datetime
    at: dt.datetime | None = None
    low: dt.datetime | None = None
    high: dt.datetime | None = None
    not_before: dt.datetime | None = None
    reason: str = ""
    remaining_jobs: int = 0
    success_prob: float | None = None
    attempts_per_job: float | None = None
    remaining_attempts: float | None = None
    slots: float | None = None
    mean_wall_s: float | None = None
    basis: str = ""
    waits_on: str = ""

    @classmethod
    def from_eta(cls, eta: eta_core.Eta, now: dt.datetime, names: dict[int, str]) -> EtaView:
        return cls(
            status=eta.status,
            now=now,
            at=_dt(eta.eta),
            low=_dt(eta.low),
            high=_dt(eta.high),
            not_before=_dt(eta.not_before),
            reason=eta.reason,
            remaining_jobs=eta.remaining_jobs,
            success_prob=eta.success_prob,
            attempts_per_job=eta.attempts_per_job,
            remaining_attempts=eta.remaining_attempts,
            slots=eta.slots,
            mean_wall_s=eta.mean_wall_s,
            basis=eta.basis,
            waits_on=names.get(eta.limited_by, "") if eta.limited_by else "",
        )

    @property
    def is_done(self) -> bool:
        return self.status == eta_core.DONE

    @property
    def is_estimated(self) -> bool:
        return self.status == eta_core.ESTIMATED

    @property
    def is_stalled(self) -> bool:
        return self.status == eta_core.STALLED

    @property
    def remaining_s(self) -> float | None:
        return None if self.at is None else (self.at - self.now).total_seconds()

    @property
    def label(self) -> str:
        """'in 5h 20m', 'done', 'stalled', 'unknown'."""
        if self.is_done:
            return "done"
        if self.is_stalled:
            return "stalled"
        if not self.is_estimated:
            return "unknown"
        return f"in {human_duration(self.remaining_s)}"

    @property
    def band_label(self) -> str:
        if not self.is_estimated or self.low is None:
            return ""
        low = human_duration((self.low - self.now).total_seconds())
        high = (
            "later" if self.high is None else human_duration((self.high - self.now).total_seconds())
        )
        return f"{low} – {high}"

    def as_dict(self) -> dict:
        iso = lambda v: v.isoformat() if v else None  # noqa: E731
        return {
            "status": self.status,
            "eta": iso(self.at),
            "low": iso(self.low),
            "high": iso(self.high),
            "not_before": iso(self.not_before),
            "remaining_seconds": self.remaining_s,
            "reason": self.reason,
            "remaining_jobs": self.remaining_jobs,
            "success_probability": self.success_prob,
            "attempts_per_job": self.attempts_per_job,
            "remaining_attempts": self.remaining_attempts,
            "slots": self.slots,
            "mean_wall_seconds": self.mean_wall_s,
            "basis": self.basis,
            "waits_on": self.waits_on or None,
        }


@dataclass
class CampaignEstimate:
    computed_at: dt.datetime
    campaign: EtaView
    stages: dict[int, EtaView] = field(default_factory=dict)


# --- database -> snapshots ------------------------------------------------------------


def _job_facts(stage_ids: list[int]) -> tuple[dict, dict, dict]:
    exhausted = dict(
        Job.objects.filter(
            stage_id__in=stage_ids,
            state=Job.State.FAILED,
            attempt_count__gte=F("max_attempts"),
        )
        .values("stage_id")
        .annotate(n=Count("id"))
        .values_list("stage_id", "n")
    )
    max_attempts = dict(
        Job.objects.filter(stage_id__in=stage_ids)
        .values("stage_id")
        .annotate(m=Avg("max_attempts"))
        .values_list("stage_id", "m")
    )
    first_started = dict(
        Attempt.objects.filter(job__stage_id__in=stage_ids, started_at__isnull=False)
        .values("job__stage_id")
        .annotate(first=Min("started_at"))
        .values_list("job__stage_id", "first")
    )
    return exhausted, max_attempts, first_started


def _span(started, ended, status, duplicate) -> eta_core.AttemptSpan:
    ok = status == Attempt.Status.SUCCEEDED and not duplicate
    return eta_core.AttemptSpan(_ts(started), _ts(ended) if ended else None, ok)


def _stage_spans(
    stage_ids: list[int], now: dt.datetime, params: eta_core.EtaParams
) -> dict[int, list[eta_core.AttemptSpan]]:
    """Attempts in the window (and running ones still heard from), plus each
    stage's latest ended ones: two queries however many stages."""
    since = now - dt.timedelta(seconds=params.window_s)
    lost_before = now - dt.timedelta(hours=float(setting("PRODMON_ETA_LOST_AFTER_HOURS")))
    fields = ("pk", "job__stage_id", "started_at", "ended_at", "status", "is_duplicate_completion")
    rows = {}
    if not stage_ids:
        return {}
    alive = Q(last_heartbeat_at__gte=lost_before) | Q(last_heartbeat_at__isnull=True)
    window = Attempt.objects.filter(job__stage_id__in=stage_ids, started_at__isnull=False).filter(
        Q(ended_at__gte=since) | (Q(status=Attempt.Status.RUNNING, ended_at__isnull=True) & alive)
    )
    for row in window.values_list(*fields):
        rows[row[0]] = row
    latest = (
        Attempt.objects.filter(
            job__stage_id__in=stage_ids,
            status__in=Attempt.ENDED,
            started_at__isnull=False,
            ended_at__lt=since,
        )
        .annotate(
            rank=Window(
                RowNumber(), partition_by=[F("job__stage_id")], order_by=F("ended_at").desc()
            )
        )
        .filter(rank__lte=params.recent_ends)
    )
    for row in latest.values_list(*fields):
        rows.setdefault(row[0], row)
    spans: dict[int, list] = {sid: [] for sid in stage_ids}
    for _, sid, started, ended, status, dup in rows.values():
        if ended is not None and ended < started:
            ended = started
        if ended is None and started > now:
            continue
        spans[sid].append(_span(started, ended, status, dup))
    return spans


def _job_type_histories(
    stages: list[Stage], limit: int = RECENT_ENDS
) -> dict[tuple[int, str], list[tuple]]:
    """The latest ended attempts of each (experiment, job type) among `stages`,
    in one query: rows of (stage id, wall, good)."""
    wanted = {(s.campaign.experiment_id, s.job_type) for s in stages if s.job_type}
    if not wanted:
        return {}
    experiments = {e for e, _ in wanted}
    types = {t for _, t in wanted}
    rows = (
        Attempt.objects.filter(
            job__stage__campaign__experiment_id__in=experiments,
            job__stage__job_type__in=types,
            status__in=Attempt.ENDED,
            started_at__isnull=False,
            ended_at__isnull=False,
        )
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("job__stage__campaign__experiment_id"), F("job__stage__job_type")],
                order_by=F("ended_at").desc(),
            )
        )
        .filter(rank__lte=limit)
        .values_list(
            "job__stage__campaign__experiment_id",
            "job__stage__job_type",
            "job__stage_id",
            "started_at",
            "ended_at",
            "status",
            "is_duplicate_completion",
        )
    )
    out: dict[tuple[int, str], list[tuple]] = {}
    for exp, job_type, sid, started, ended, status, dup in rows:
        good = status == Attempt.Status.SUCCEEDED and not dup
        wall = max((ended - started).total_seconds(), 0.0)
        out.setdefault((exp, job_type), []).append((sid, wall, good))
    return out


def experiment_pool_histories(
    *, experiment_ids: set[int], now: dt.datetime, params: eta_core.EtaParams
) -> dict[int, list[tuple[int, eta_core.AttemptSpan]]]:
    """Each experiment's attempts of the last `profile_days` (every campaign),
    as (campaign id, span), from which the estimator learns the hour-of-day
    profile of its slots: one query however many experiments."""
    out: dict[int, list[tuple[int, eta_core.AttemptSpan]]] = {e: [] for e in experiment_ids}
    if not experiment_ids:
        return out
    since = now - dt.timedelta(days=params.profile_days)
    lost_before = now - dt.timedelta(hours=float(setting("PRODMON_ETA_LOST_AFTER_HOURS")))
    rows = (
        Attempt.objects.filter(
            job__stage__campaign__experiment_id__in=experiment_ids,
            started_at__isnull=False,
            started_at__lte=now,
        )
        .filter(
            Q(ended_at__gte=since)
            | (
                Q(status=Attempt.Status.RUNNING, ended_at__isnull=True)
                & (Q(last_heartbeat_at__gte=lost_before) | Q(last_heartbeat_at__isnull=True))
            )
        )
        .values_list(
            "job__stage__campaign__experiment_id",
            "job__stage__campaign_id",
            "started_at",
            "ended_at",
        )
    )
    for exp, campaign_id, started, ended in rows.iterator(chunk_size=5000):
        span = eta_core.AttemptSpan(_ts(started), _ts(max(ended, started)) if ended else None)
        out[exp].append((campaign_id, span))
    return out


def campaign_snapshots(
    *, campaigns: list[Campaign], now: dt.datetime, params: eta_core.EtaParams
) -> dict[int, tuple[list[eta_core.StageSnapshot], dict[int, str]]]:
    """The estimator's inputs for each campaign, in a fixed number of queries."""
    stages = list(
        Stage.objects.filter(campaign__in=campaigns)
        .select_related("campaign")
        .prefetch_related("depends_on")
        .order_by("campaign_id", "order", "name")
    )
    ids = [s.pk for s in stages]
    counts = stage_job_counts(stage_ids=ids)
    exhausted, max_attempts, first_started = _job_facts(ids)
    spans = _stage_spans(ids, now, params)
    thin = [s for s in stages if sum(1 for sp in spans[s.pk] if sp.ended) < params.min_ends]
    histories = _job_type_histories(thin)
    out: dict[int, tuple[list, dict]] = {c.pk: ([], {}) for c in campaigns}
    for s in stages:
        c = counts[s.pk]
        created = sum(c.values())
        total = max(s.expected_jobs, created)
        exh = exhausted.get(s.pk, 0)
        history = None
        rows = [
            r for r in histories.get((s.campaign.experiment_id, s.job_type), []) if r[0] != s.pk
        ]
        if rows:
            ok = sum(1 for r in rows if r[2])
            history = eta_core.History(
                walls=tuple(r[1] for r in rows), successes=ok, failures=len(rows) - ok
            )
        first = first_started.get(s.pk)
        snaps, names = out[s.campaign_id]
        names[s.pk] = s.name
        snaps.append(
            eta_core.StageSnapshot(
                key=s.pk,
                name=s.name,
                total_jobs=total,
                target=math.ceil(total * s.completion_pct / 100) if total else 0,
                succeeded=c[Job.State.SUCCEEDED],
                parents=tuple(d.pk for d in s.depends_on.all()),
                max_attempts=round(max_attempts.get(s.pk) or 3),
                queued_jobs=c[Job.State.PENDING] + c[Job.State.QUEUED],
                # Failed jobs with attempts left: retried while the stage has other
                # work in play; with none, the stage is stalled (needs recovery).
                retry_jobs=max(c[Job.State.FAILED] - exh, 0),
                running_jobs=c[Job.State.RUNNING],
                exhausted_jobs=exh,
                active=s.state not in INACTIVE_STAGE_STATES,
                first_started=_ts(first) if first else None,
                spans=tuple(spans[s.pk]),
                job_type_history=history,
            )
        )
    return out


def _cache_key(campaign: Campaign) -> str:
    # created_at too: a reused primary key (tests, restores) never hits a stale entry.
    return f"progress:campaign-eta:{campaign.pk}:{campaign.created_at.timestamp():.6f}"


def campaigns_estimate(
    *,
    campaigns: list[Campaign],
    now: dt.datetime | None = None,
    use_cache: bool = True,
    store_for: int | None = None,
) -> dict[int, CampaignEstimate]:
    """ETAs of campaigns and their stages, in a fixed number of queries for all
    the campaigns not in the cache. Cached briefly (PRODMON_ETA_CACHE_SECONDS):
    the replay costs a fraction of a second and the numbers move slowly."""
    use_cache = use_cache and now is None
    results: dict[int, CampaignEstimate] = {}
    if use_cache:
        found = cache.get_many([_cache_key(c) for c in campaigns])
        for c in campaigns:
            if _cache_key(c) in found:
                results[c.pk] = found[_cache_key(c)]
    todo = [c for c in campaigns if c.pk not in results]
    if not todo:
        return results
    now = now or timezone.now()
    params = eta_params()
    inputs = campaign_snapshots(campaigns=todo, now=now, params=params)
    pools = experiment_pool_histories(
        experiment_ids={c.experiment_id for c in todo}, now=now, params=params
    )
    fresh = {}
    for c in todo:
        snaps, names = inputs[c.pk]
        # The pool's other campaigns: the campaign's own attempts are in snaps.
        others = [span for cid, span in pools[c.experiment_id] if cid != c.pk]
        stage_etas, campaign_eta = eta_core.estimate_campaign(snaps, _ts(now), params, others)
        results[c.pk] = fresh[_cache_key(c)] = CampaignEstimate(
            computed_at=now,
            campaign=EtaView.from_eta(campaign_eta, now, names),
            stages={k: EtaView.from_eta(v, now, names) for k, v in stage_etas.items()},
        )
    if store_for:
        cache.set_many(fresh, store_for)
    elif use_cache:
        cache.set_many(fresh, int(setting("PRODMON_ETA_CACHE_SECONDS")))
    return results


REFRESH_BATCH = 20
REFRESH_QUEUED_KEY = "progress:campaign-eta:refresh-queued"


def campaigns_estimate_cached(*, campaigns: list[Campaign]) -> dict[int, CampaignEstimate]:
    """The cached estimates only, for pages that list many campaigns: a miss
    queues the refresher (at most once a minute) instead of replaying on the
    request path, and the campaign shows "being computed" until it has run.
    Where tasks run eagerly (tests, the embedded setup) it runs at once."""
    keys = {_cache_key(c): c.pk for c in campaigns}
    found = {keys[k]: v for k, v in cache.get_many(list(keys)).items()}
    if len(found) < len(campaigns) and cache.add(REFRESH_QUEUED_KEY, 1, timeout=60):
        from prodmon.progress.tasks import estimates_refresh_task

        estimates_refresh_task.delay()
        found = {keys[k]: v for k, v in cache.get_many(list(keys)).items()}
    return found


def campaigns_estimate_refresh(*, limit: int = 500) -> int:
    """Recompute the estimates of the active campaigns into the cache, kept for
    three refresh periods. The beat task progress.estimates_refresh_task runs
    this every PRODMON_ETA_REFRESH_SECONDS (300), so the campaign pages read
    estimates at most that old and do not replay on the request path (at a
    million jobs one campaign's inputs and replay cost seconds). A campaign's
    own page still computes on a miss; the list never does."""
    campaigns = list(
        Campaign.objects.filter(state=Campaign.State.ACTIVE).order_by("-created_at")[:limit]
    )
    ttl = 3 * int(setting("PRODMON_ETA_REFRESH_SECONDS"))
    for i in range(0, len(campaigns), REFRESH_BATCH):
        campaigns_estimate(
            campaigns=campaigns[i : i + REFRESH_BATCH], use_cache=False, store_for=ttl
        )
    return len(campaigns)


def campaign_estimate(
    *, campaign: Campaign, now: dt.datetime | None = None, use_cache: bool = True
) -> CampaignEstimate:
    return campaigns_estimate(campaigns=[campaign], now=now, use_cache=use_cache)[campaign.pk]


# --- reprocessing ----------------------------------------------------------------------


@dataclass
class ReprocessingView:
    job_type: str
    estimate: eta_core.ReprocessingEstimate
    slots_source: str  # "running now" or "given"

    @property
    def duration_label(self) -> str:
        return human_duration(self.estimate.duration_s)

    @property
    def band_label(self) -> str:
        e = self.estimate
        if e.low_s is None:
            return ""
        return f"{human_duration(e.low_s)} – {human_duration(e.high_s)}"


def job_type_list(*, experiment_ids: set[int]) -> list[str]:
    return sorted(
        set(
            Stage.objects.filter(campaign__experiment_id__in=experiment_ids)
            .exclude(job_type="")
            .values_list("job_type", flat=True)
        )
    )


def job_type_running_slots(*, experiment_ids: set[int], job_type: str) -> int:
    return Attempt.objects.filter(
        job__stage__campaign__experiment_id__in=experiment_ids,
        job__stage__job_type=job_type,
        status=Attempt.Status.RUNNING,
    ).count()


def reprocessing_estimate(
    *,
    experiment_ids: set[int],
    job_type: str,
    inputs: int,
    slots: int | None = None,
    limit: int = 2000,
) -> ReprocessingView:
    """How long `inputs` jobs of `job_type` would take on `slots` slots (by
    default, as many as that job type has running now)."""
    base = Attempt.objects.filter(
        job__stage__campaign__experiment_id__in=experiment_ids,
        job__stage__job_type=job_type,
        status__in=Attempt.ENDED,
        wall_s__isnull=False,
    ).order_by("-ended_at")
    rows = list(
        base.values_list("status", "wall_s", "is_duplicate_completion", "job__max_attempts")[:limit]
    )
    good = [w for st, w, dup, _ in rows if st == Attempt.Status.SUCCEEDED and not dup]
    bad = [w for st, w, dup, _ in rows if not (st == Attempt.Status.SUCCEEDED and not dup)]
    max_attempts = round(sum(m for *_, m in rows) / len(rows)) if rows else 3
    source = "given"
    if slots is None:
        slots = job_type_running_slots(experiment_ids=experiment_ids, job_type=job_type)
        source = "running now"
    estimate = eta_core.reprocessing_estimate(
        walls=good,
        successes=len(good),
        failures=len(bad),
        failed_walls=bad,
        inputs=inputs,
        slots=slots,
        max_attempts=max_attempts,
    )
    return ReprocessingView(job_type=job_type, estimate=estimate, slots_source=source)
