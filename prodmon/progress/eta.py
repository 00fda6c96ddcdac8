"""Completion estimates: pure functions over plain data, no Django.

The portal (prodmon.progress.selectors builds the inputs from the database)
and the replay benchmark (bench/eta.py builds them from a simulated campaign)
both call `estimate_campaign`, so the benchmark measures the code the portal
runs. Times are POSIX seconds (floats).

The method (docs/progress.md has the long form). For each stage:

- slots: the campaign's average running attempts over the trailing window
  (24 h, so a night's dip is in the average) times this stage's share of
  them over the last few hours (which stages have work now);
- the wall-time distribution of its attempts, Kaplan-Meier with running
  attempts as censored observations (early in a stage only the short attempts
  have ended; ignoring the long running ones would make it look faster);
- the success probability per attempt, with a Beta(1, 1) prior;
- the jobs still needed to reach its completion target. Each job is retried
  until it succeeds or reaches its max attempts, so a job costs on average
  E = (1 - (1-p)^m) / p attempts, at most min(1/p, m).

Before a stage has ended attempts of its own, the wall times and success rate
of earlier attempts of the same job type stand in; with neither, the answer
is "unknown" and never a number.

The remaining work is then replayed a few dozen times (Monte Carlo): running
attempts finish after a residual drawn from the wall-time distribution given
how long they have run, queued jobs take free slots, failed attempts are
retried, and a child stage's jobs are released as its parents' jobs resolve
(all k inputs of a k-to-1 merge must be there), so a child can never finish
before its parents and moves at their pace while they run. When a parent has
drained, its slots pass to its children. The ETA is the median finish over
the draws and the band their 10th to 90th percentile, widened by a
systematic fraction that bench/eta.py calibrates; the draws also vary the
slot count (hour-to-hour fluctuation) and the success probability.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

HOUR = 3600.0
DAY = 24 * HOUR

DONE = "done"
ESTIMATED = "estimated"
UNKNOWN = "unknown"
STALLED = "stalled"  # below its target with nothing running, queued or still to come


@dataclass(frozen=True)
class AttemptSpan:
    """One attempt: when it started, when it ended (None while running), how."""

    started: float
    ended: float | None = None
    succeeded: bool = False

    @property
    def wall(self) -> float | None:
        return None if self.ended is None else max(self.ended - self.started, 0.0)


@dataclass(frozen=True)
class History:
    """Ended attempts of one kind of work: wall times and outcomes."""

    walls: tuple[float, ...] = ()
    successes: int = 0
    failures: int = 0

    @property
    def ended(self) -> int:
        return self.successes + self.failures


@dataclass(frozen=True)
class StageSnapshot:
    """What the estimator needs to know about one stage at `now`.

    `spans` holds the attempts that overlap the trailing window, the running
    ones and the most recent ended ones. A duplicate completion belongs in
    spans as a failure: it used a slot and made no progress.
    """

    key: int
    name: str
    total_jobs: int  # expected jobs, or the created ones when more
    target: int  # succeeded jobs at which the stage counts as complete
    succeeded: int
    parents: tuple[int, ...] = ()
    max_attempts: int = 3
    queued_jobs: int = 0  # waiting to run: created or submitted, not running yet
    running_jobs: int = 0
    # Failed with attempts left: they run again only if something retries them.
    # While the stage has other work they are assumed to be retried (a batch
    # system or a shifter does); with nothing else in play the stage is stalled.
    retry_jobs: int = 0
    exhausted_jobs: int = 0  # failed with no attempts left
    active: bool = True  # False while held or aborted
    first_started: float | None = None
    spans: tuple[AttemptSpan, ...] = ()
    job_type_history: History | None = None  # stands in before the stage has its own

    @property
    def pending_jobs(self) -> int:
        """Jobs not created or not ready yet: they wait on the parents' outputs."""
        return max(
            self.total_jobs
            - self.succeeded
            - self.exhausted_jobs
            - self.running_jobs
            - self.queued_jobs
            - self.retry_jobs,
            0,
        )


@dataclass(frozen=True)
class EtaParams:
    window_s: float = 24 * HOUR
    share_window_s: float = 3 * HOUR  # how the slots are shared out now
    min_ends: int = 5  # ended attempts before a stage's own data is used
    recent_ends: int = 500  # the wall-time distribution uses the latest ends
    draws: int = 40
    max_sim_jobs: int = 3000  # larger campaigns are replayed as a scaled replica
    band: tuple[float, float] = (0.1, 0.9)
    systematic: float = 0.10  # extra relative width of the band (bench-calibrated)
    fluctuation_hours: float = 6.0  # slot-count fluctuations are correlated this long
    horizon_s: float = 365 * 24 * HOUR  # a replay never runs past this
    profile_days: float = 7.0  # the hour-of-day slot profile looks back this far
    profile_min_hours: int = 18  # hours of the day it must have seen to be used
    level_half_life_s: float = 6 * HOUR  # recent hours weigh more in the slot level
    seed: int = 12345


@dataclass
class Eta:
    key: int
    name: str
    status: str  # done | estimated | unknown
    eta: float | None = None
    low: float | None = None
    high: float | None = None
    not_before: float | None = None
    reason: str = ""
    remaining_jobs: int = 0
    success_prob: float | None = None
    attempts_per_job: float | None = None
    remaining_attempts: float | None = None
    slots: float | None = None
    mean_wall_s: float | None = None
    limited_by: int | None = None  # the unfinished parent it waits on
    basis: str = ""  # "own" or "job type history"
    draws: list[float] = field(default_factory=list, repr=False)

    @property
    def is_known(self) -> bool:
        return self.status == ESTIMATED

    def as_dict(self) -> dict:
        return {
            k: getattr(self, k)
            for k in (
                "status",
                "eta",
                "low",
                "high",
                "not_before",
                "reason",
                "remaining_jobs",
                "success_prob",
                "attempts_per_job",
                "remaining_attempts",
                "slots",
                "mean_wall_s",
                "basis",
            )
        }


def attempts_per_job(p: float, max_attempts: int) -> float:
    """Expected attempts of a job retried until success or `max_attempts`:
    the sum of (1-p)^k for k < m, (1 - (1-p)^m) / p, at most min(1/p, m)."""
    m = max(int(max_attempts), 1)
    if p <= 0:
        return float(m)
    if p >= 1:
        return 1.0
    return (1.0 - (1.0 - p) ** m) / p


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics; `sorted_values` sorted."""
    if not sorted_values:
        raise ValueError("no values")
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    if sorted_values[hi] == math.inf:
        return math.inf if pos > lo else sorted_values[lo]
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


# --- wall times -------------------------------------------------------------------


class WallDistribution:
    """Kaplan-Meier estimate of attempt wall times; running attempts are
    censored at their elapsed time. Beyond the longest observation the tail
    is exponential with a mean of a fifth of it."""

    def __init__(self, walls: Iterable[float], censored: Iterable[float] = ()):
        points = sorted([(max(w, 0.0), 1) for w in walls] + [(max(c, 0.0), 0) for c in censored])
        if not any(d for _, d in points):
            raise ValueError("a wall-time distribution needs at least one ended attempt")
        at_risk = len(points)
        survival = 1.0
        self.times: list[float] = []
        self.neg_surv: list[float] = []  # -S(t) after each event time: ascending
        i = 0
        while i < len(points):
            t = points[i][0]
            events = censored_here = 0
            while i < len(points) and points[i][0] == t:
                if points[i][1]:
                    events += 1
                else:
                    censored_here += 1
                i += 1
            if events:
                survival *= 1.0 - events / at_risk
                self.times.append(t)
                self.neg_surv.append(-survival)
            at_risk -= events + censored_here
        self.tail_start = max(points[-1][0], self.times[-1])
        self.tail_mass = survival
        self.tail_mean = max(self.tail_start, 1.0) * 0.2
        mean, prev_t, prev_s = 0.0, 0.0, 1.0
        for t, ns in zip(self.times, self.neg_surv, strict=True):
            mean += (t - prev_t) * prev_s
            prev_t, prev_s = t, -ns
        mean += (self.tail_start - prev_t) * prev_s + self.tail_mass * self.tail_mean
        self.mean = mean

    def survival(self, t: float) -> float:
        i = bisect.bisect_right(self.times, t)
        return 1.0 if i == 0 else -self.neg_surv[i - 1]

    def _inverse(self, u: float, rng: random.Random) -> float:
        """The time at which survival falls to u (0 < u <= 1)."""
        if u <= self.tail_mass:
            return self.tail_start + rng.expovariate(1.0 / self.tail_mean)
        # First event time whose survival is below u.
        i = bisect.bisect_right(self.neg_surv, -u)
        return self.times[min(i, len(self.times) - 1)]

    def sample(self, rng: random.Random) -> float:
        return self._inverse(1.0 - rng.random(), rng)

    def residual(self, rng: random.Random, elapsed: float) -> float:
        """Time still to run for an attempt that has run `elapsed` so far."""
        s = self.survival(elapsed)
        if s <= self.tail_mass or elapsed >= self.tail_start:
            return rng.expovariate(1.0 / self.tail_mean)
        t = self._inverse((1.0 - rng.random()) * s, rng)
        return max(t - elapsed, 0.0)


# --- slots ------------------------------------------------------------------------


def busy_slots(
    spans: Iterable[AttemptSpan], start: float, end: float, bin_s: float = HOUR
) -> list[float]:
    """Average number of attempts running in each bin of [start, end)."""
    length = end - start
    if length <= 0:
        return []
    nbins = max(1, math.ceil(length / bin_s))
    width = length / nbins
    bins = [0.0] * nbins
    for s in spans:
        a = max(s.started, start)
        b = min(end if s.ended is None else s.ended, end)
        if b <= a:
            continue
        first = int((a - start) // width)
        last = min(nbins - 1, int((b - start) // width))
        for i in range(first, last + 1):
            lo = start + i * width
            bins[i] += max(0.0, min(b, lo + width) - max(a, lo))
    return [x / width for x in bins]


def _busy_seconds(spans: Iterable[AttemptSpan], start: float, end: float) -> float:
    total = 0.0
    for s in spans:
        a = max(s.started, start)
        b = min(end if s.ended is None else s.ended, end)
        if b > a:
            total += b - a
    return total


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    if n == 0:
        return 0.0, 0.0
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def hour_of_day(t: float) -> int:
    return int((t % DAY) // HOUR)


def hourly_envelope(spans: Iterable[AttemptSpan], now: float, days: float) -> list[float | None]:
    """For each hour of the day (UTC), the most slots in use in that hour on
    any of the last `days` days (None: not seen). The pool gave at least that
    many; the maximum ignores hours in which there was simply no work."""
    end = math.floor(now / HOUR) * HOUR  # full hours only
    start = end - days * DAY
    spans = [s for s in spans if (s.ended is None or s.ended > start) and s.started < end]
    if not spans:
        return [None] * 24
    first = math.floor(min(s.started for s in spans) / HOUR) * HOUR
    start = max(start, first)
    if end <= start:
        return [None] * 24
    envelope: list[float | None] = [None] * 24
    for i, busy in enumerate(busy_slots(spans, start, end, HOUR)):
        h = hour_of_day(start + i * HOUR)
        envelope[h] = busy if envelope[h] is None else max(envelope[h], busy)
    return envelope


def slot_shape(envelope: Sequence[float | None], min_hours: int) -> tuple[float, ...] | None:
    """The hour-of-day profile of the pool, normalised to a mean of 1, from an
    hourly envelope; unseen hours are interpolated from their neighbours.
    None when too few hours of the day have been seen."""
    seen = [h for h in range(24) if envelope[h] is not None and envelope[h] > 0]
    if len(seen) < min_hours:
        return None
    values = []
    for h in range(24):
        if h in seen:
            values.append(envelope[h])
            continue
        before = max((x for x in seen if x < h), default=seen[-1] - 24)
        after = min((x for x in seen if x > h), default=seen[0] + 24)
        a, b = envelope[before % 24], envelope[after % 24]
        values.append(a + (b - a) * (h - before) / (after - before))
    mean = sum(values) / 24
    return tuple(v / mean for v in values)


@dataclass(frozen=True)
class SlotPool:
    """The campaign's slots: their level (the average over the window, with
    the hour-of-day profile divided out when one is known), the profile, and
    how they were shared out among the stages recently (the current regime)."""

    mean: float
    sd: float
    bins: int
    recent_start: float
    recent_busy: float
    shape: tuple[float, ...] | None = None

    def share(self, spans: Iterable[AttemptSpan], now: float) -> float:
        if self.recent_busy <= 0:
            return 0.0
        return min(_busy_seconds(spans, self.recent_start, now) / self.recent_busy, 1.0)

    def factor(self, t: float) -> float:
        """The pool at time t relative to its level (1 without a profile)."""
        if self.shape is None:
            return 1.0
        x = (t % DAY) / HOUR - 0.5  # the profile's values sit at mid-hour
        h = math.floor(x)
        frac = x - h
        return self.shape[h % 24] * (1 - frac) + self.shape[(h + 1) % 24] * frac


def slot_pool(
    stages: Sequence[StageSnapshot],
    now: float,
    params: EtaParams,
    pool_history: Sequence[AttemptSpan] = (),
) -> SlotPool | None:
    """The campaign's slot pool. `pool_history`: earlier attempts on the same
    pool (the experiment's last days, other campaigns included), from which,
    with the campaign's own, the hour-of-day profile is learned."""
    spans = [sp for s in stages for sp in s.spans]
    firsts = [s.first_started for s in stages if s.first_started is not None]
    start = now - params.window_s
    if firsts:
        start = max(start, min(firsts))
    if now - start <= 0:
        return None
    shape = slot_shape(
        hourly_envelope([*pool_history, *spans], now, params.profile_days),
        params.profile_min_hours,
    )
    # Hour bins once there is a day of history; finer while the campaign is
    # young, so the spread is still estimated from a dozen bins.
    width = min(HOUR, max((now - start) / 12, 60.0))
    bins = busy_slots(spans, start, now, width)
    if not bins or sum(bins) <= 0:
        return None
    if shape is None:
        levels = bins
    else:
        # Divide the profile out: what the pool gives at its average hour.
        step = (now - start) / len(bins)
        base = SlotPool(0, 0, 0, 0, 0, shape)
        levels = [b / base.factor(start + (i + 0.5) * step) for i, b in enumerate(bins)]
    # Recent hours weigh more: a pool that shrinks (a weekend, a site down)
    # is followed within hours; the profile already accounts for the night.
    step = (now - start) / len(levels)
    weights = [
        0.5 ** ((now - (start + (i + 0.5) * step)) / params.level_half_life_s)
        for i in range(len(levels))
    ]
    mean = sum(w * v for w, v in zip(weights, levels, strict=True)) / sum(weights)
    recent_start = max(now - params.share_window_s, start)
    return SlotPool(
        mean=mean,
        sd=_mean_sd(levels)[1] if len(levels) > 1 else mean * 0.5,
        bins=len(levels),
        recent_start=recent_start,
        recent_busy=_busy_seconds(spans, recent_start, now),
        shape=shape,
    )


# --- the estimate ---------------------------------------------------------------------


@dataclass
class _Model:
    """One stage, ready to replay."""

    snap: StageSnapshot
    walls: WallDistribution
    successes: int
    failures: int
    own_slots: float  # before its parents have drained
    elapsed: list[float]  # of its running attempts
    basis: str

    @property
    def p(self) -> float:
        return (self.successes + 1) / (self.successes + self.failures + 2)


def _wall_cohort(
    spans: Sequence[AttemptSpan], now: float, since: float, size: int
) -> tuple[list[float], list[float]]:
    """Wall times of a cohort by start: every attempt started since `since`,
    ended or still running (censored), and further back until `size` have
    ended. A cohort by start is a fair sample once it is long enough; the
    latest ends are not (early in a stage the latest to end are the long
    ones of the first wave)."""
    walls: list[float] = []
    censored: list[float] = []
    for s in sorted((s for s in spans if s.started <= now), key=lambda s: -s.started):
        if s.started < since and len(walls) >= size:
            break
        if s.ended is None:
            censored.append(now - s.started)
        else:
            walls.append(s.wall)
    return walls, censored


def _model(
    snap: StageSnapshot,
    now: float,
    params: EtaParams,
    pool: SlotPool | None,
    open_parents: bool,
) -> tuple[_Model | None, str]:
    ended = sorted((s for s in snap.spans if s.ended is not None), key=lambda s: s.ended)
    ended = ended[-params.recent_ends :]
    running = [now - s.started for s in snap.spans if s.ended is None and s.started <= now]
    if len(ended) >= params.min_ends:
        ok = sum(s.succeeded for s in ended)
        successes, failures, basis = ok, len(ended) - ok, "own"
        walls, censored = _wall_cohort(snap.spans, now, now - params.window_s, params.recent_ends)
    elif snap.job_type_history is not None and snap.job_type_history.ended >= params.min_ends:
        h = snap.job_type_history
        walls, successes, failures, basis = (
            list(h.walls),
            h.successes,
            h.failures,
            "job type history",
        )
        censored = []
    elif not ended:
        return None, "no attempt of this stage has ended yet"
    else:
        return None, f"only {len(ended)} attempts have ended; {params.min_ends} are needed"
    if not walls:
        return None, "no ended attempt has a wall time"

    own = pool.share(snap.spans, now) * pool.mean if pool is not None else 0.0
    if own <= 0 and not open_parents:
        if snap.queued_jobs + snap.retry_jobs + snap.pending_jobs > 0 and pool is not None:
            own = pool.mean  # ready and waiting for slots: assume the campaign's
        else:
            return (
                None,
                f"nothing of this stage ran in the last {params.share_window_s / HOUR:.0f} h",
            )
    return _Model(
        snap=snap,
        walls=WallDistribution(walls, censored),
        successes=successes,
        failures=failures,
        own_slots=own,
        elapsed=running,
        basis=basis,
    ), ""


def _topological(stages: Sequence[StageSnapshot]) -> list[StageSnapshot]:
    by_key = {s.key: s for s in stages}
    out: list[StageSnapshot] = []
    seen: set[int] = set()
    visiting: set[int] = set()

    def visit(s: StageSnapshot) -> None:
        if s.key in seen:
            return
        if s.key in visiting:
            raise ValueError(f"stage dependencies form a cycle through {s.name}")
        visiting.add(s.key)
        for parent in s.parents:
            if parent in by_key:
                visit(by_key[parent])
        visiting.discard(s.key)
        seen.add(s.key)
        out.append(s)

    for s in stages:
        visit(s)
    return out


def estimate_campaign(
    stages: Sequence[StageSnapshot],
    now: float,
    params: EtaParams | None = None,
    pool_history: Sequence[AttemptSpan] = (),
) -> tuple[dict[int, Eta], Eta]:
    """ETAs of every stage and of the whole campaign (its last stage to finish).
    `pool_history`: earlier attempts on the same pool (see slot_pool)."""
    params = params or EtaParams()
    pool = slot_pool(stages, now, params, pool_history)
    results: dict[int, Eta] = {}
    models: dict[int, _Model] = {}
    ordered = _topological(stages)

    drained, pending, stalled = _drain_state(ordered)
    for snap in ordered:
        remaining = max(snap.target - snap.succeeded, 0)
        eta = Eta(key=snap.key, name=snap.name, status=UNKNOWN, remaining_jobs=remaining)
        results[snap.key] = eta
        # A parent that has reached its target may still be running retries whose
        # outputs its children wait for; it is open until it has drained.
        open_parents = [
            results[k]
            for k in snap.parents
            if k in results and not drained[k] and (results[k].status != DONE or k in models)
        ]
        if remaining == 0:
            eta.status = DONE
            eta.eta = eta.low = eta.high = now
            if not drained[snap.key]:
                model, _ = _model(snap, now, params, pool, bool(open_parents))
                if model is not None:
                    models[snap.key] = model
            continue
        if not snap.active:
            eta.reason = "the stage is held"
            continue
        if snap.key in stalled:
            eta.status = STALLED
            eta.reason = (
                f"nothing running or queued, no inputs to come: {snap.retry_jobs} failed "
                f"job{'s' if snap.retry_jobs != 1 else ''} with attempts left need a retry"
            )
            continue
        blocked = [p for p in open_parents if p.key not in models]
        if blocked:
            eta.reason = f"waits on {', '.join(p.name for p in blocked)}, whose finish is unknown"
            continue
        model, reason = _model(snap, now, params, pool, bool(open_parents))
        if model is None:
            eta.reason = reason
            continue
        models[snap.key] = model
        per_job = attempts_per_job(model.p, snap.max_attempts)
        eta.success_prob = model.p
        eta.attempts_per_job = per_job
        eta.remaining_attempts = remaining * per_job
        eta.slots = model.own_slots * (pool.factor(now) if pool is not None else 1.0)
        eta.mean_wall_s = model.walls.mean
        eta.basis = model.basis
        if open_parents:
            eta.limited_by = open_parents[0].key

    if models:
        finishes = _replay(
            [m for s in ordered if (m := models.get(s.key)) is not None],
            stages,
            drained,
            pending,
            now,
            params,
            pool,
        )
        for key, draws in finishes.items():
            if results[key].status == DONE:
                results[key].draws = [now] * params.draws
            else:
                _summarise(results[key], draws, now, params)
    for snap in ordered:
        eta = results[snap.key]
        bounds = [results[k].eta for k in snap.parents if k in results and results[k].eta]
        if bounds and eta.status != DONE:
            eta.not_before = max(bounds)
    return results, _campaign_eta(ordered, results, now, params)


FAN_IN_MIN = 1.5  # parent jobs per child job from which a child is a k-to-1 merge


def _fan_in(parent: StageSnapshot, child: StageSnapshot) -> float:
    return max(parent.total_jobs / max(child.total_jobs, 1), 1.0)


def _drain_state(
    ordered: list[StageSnapshot],
) -> tuple[dict[int, bool], dict[int, int], set[int]]:
    """Which stages can no longer produce outputs, the jobs each stage still
    waits to create, and which stages are stalled.

    A child's jobs whose inputs will never exist are not work: once every
    parent has drained, a one-to-one child can only have as many jobs as its
    parents have good ones (a merge exists if any of its inputs does).

    A stage is stalled when it is below its target with nothing running, nothing
    queued and nothing more to come from its parents: only failed jobs with
    attempts left remain, and nothing retries them on its own. Its retries are
    then not counted as work in play (it needs recovery, not a date).
    """
    snaps = {s.key: s for s in ordered}
    drained: dict[int, bool] = {}
    pending: dict[int, int] = {}
    stalled: set[int] = set()
    for snap in ordered:
        parents = [snaps[k] for k in snap.parents if k in snaps]
        one_to_one = [p for p in parents if _fan_in(p, snap) < FAN_IN_MIN]
        if one_to_one:
            # A one-to-one child has at most as many jobs as its parents have
            # good outputs, now or still to come from the jobs in play.
            fraction = min(
                (
                    p.succeeded
                    + p.running_jobs
                    + p.queued_jobs
                    + (0 if p.key in stalled else p.retry_jobs)
                    + pending[p.key]
                )
                / max(p.total_jobs, 1)
                for p in one_to_one
            )
            created = snap.total_jobs - snap.pending_jobs
            reachable = math.ceil(snap.total_jobs * min(fraction, 1.0) - 1e-9)
            pending[snap.key] = max(min(snap.pending_jobs, reachable - created), 0)
        else:
            pending[snap.key] = snap.pending_jobs
        idle = snap.running_jobs == 0 and snap.queued_jobs == 0 and pending[snap.key] == 0
        parents_drained = all(drained[p.key] for p in parents)
        if (
            idle
            and parents_drained
            and snap.active
            and snap.retry_jobs > 0
            and snap.succeeded < snap.target
        ):
            stalled.add(snap.key)
        drained[snap.key] = idle and (snap.retry_jobs == 0 or snap.key in stalled)
    return drained, pending, stalled


def _summarise(eta: Eta, draws: list[float], now: float, params: EtaParams) -> None:
    ordered = sorted(draws)
    eta.draws = draws
    median = percentile(ordered, 0.5)
    if median == math.inf:
        eta.status = UNKNOWN
        eta.reason = (
            "at the current failure rate the target is out of reach "
            "(too many jobs exhaust their attempts); it needs recovery"
        )
        return
    eta.status = ESTIMATED
    eta.eta = median
    lo = percentile(ordered, params.band[0])
    hi = percentile(ordered, params.band[1])
    eta.low = now + (lo - now) * (1 - params.systematic)
    eta.high = None if hi == math.inf else now + (hi - now) * (1 + params.systematic)


def _campaign_eta(
    ordered: list[StageSnapshot], results: dict[int, Eta], now: float, params: EtaParams
) -> Eta:
    etas = [results[s.key] for s in ordered]
    out = Eta(key=0, name="campaign", status=UNKNOWN)
    out.remaining_jobs = sum(e.remaining_jobs for e in etas)
    if not etas:
        out.reason = "the campaign has no stages"
        return out
    if all(e.status == DONE for e in etas):
        out.status = DONE
        out.eta = out.low = out.high = now
        return out
    pending = [e for e in etas if e.status != DONE]
    stuck = [e for e in pending if e.status == STALLED]
    if stuck:
        out.status = STALLED
        out.limited_by = stuck[0].key
        out.reason = "needs recovery: " + ", ".join(e.name for e in stuck) + " stalled"
        return out
    unknown = [e for e in pending if e.status != ESTIMATED]
    bounds = [e.eta for e in pending if e.eta is not None]
    bounds += [e.not_before for e in pending if e.not_before is not None]
    if bounds:
        out.not_before = max(bounds)
    if unknown:
        out.reason = "unknown for " + ", ".join(e.name for e in unknown)
        return out
    last = max(pending, key=lambda e: e.eta)
    out.limited_by = last.key
    _summarise(out, [max(e.draws[i] for e in pending) for i in range(params.draws)], now, params)
    return out


# --- the replay -------------------------------------------------------------------------


def _replay(
    models: list[_Model],
    stages: Sequence[StageSnapshot],
    drained: dict[int, bool],
    pending_jobs: dict[int, int],
    now: float,
    params: EtaParams,
    pool: SlotPool | None,
) -> dict[int, list[float]]:
    """Finish times (per draw) of each modelled stage; inf when never reached."""
    rng = random.Random(params.seed)
    keys = [m.snap.key for m in models]
    index = {k: i for i, k in enumerate(keys)}
    snaps = {s.key: s for s in stages}
    remaining_jobs = sum(
        m.snap.total_jobs - m.snap.succeeded - m.snap.exhausted_jobs for m in models
    )
    scale = max(1, math.ceil(remaining_jobs / params.max_sim_jobs))

    # Parents that still release work (in the replay), the fan-in from each,
    # and for a merge how its parent's unresolved inputs spread over its jobs.
    parents: list[list[tuple[int, float, float]]] = []
    children: list[list[int]] = [[] for _ in models]
    for i, m in enumerate(models):
        links = []
        for pk in m.snap.parents:
            if pk in index and not drained[pk]:
                fan_in = _fan_in(snaps[pk], m.snap)
                spread = MERGE_SPREAD
                if fan_in >= FAN_IN_MIN:
                    spread = _merge_spread_now(snaps[pk], m.snap, pending_jobs, fan_in)
                links.append((index[pk], fan_in, spread))
                children[index[pk]].append(i)
        parents.append(links)

    # Slot fluctuation over the horizon, for the draws.
    work = sum(
        (m.snap.total_jobs - m.snap.succeeded) * attempts_per_job(m.p, m.snap.max_attempts)
        for m in models
    ) * (sum(m.walls.mean for m in models) / len(models))
    pool_mean = pool.mean if pool is not None else sum(m.own_slots for m in models) or 1.0
    horizon_h = max(work / max(pool_mean, 1e-9) / HOUR, 1.0)
    rel_sd = 0.0
    if pool is not None and pool.mean > 0:
        rel_sd = (pool.sd / pool.mean) * math.sqrt(
            1.0 / pool.bins + 1.0 / max(horizon_h / params.fluctuation_hours, 1.0)
        )

    on_demand = _served_on_demand(models)
    out: dict[int, list[float]] = {k: [] for k in keys}
    for _ in range(params.draws):
        factor = min(max(rng.gauss(1.0, rel_sd), 0.3), 2.0)
        draw = _Draw(models, parents, children, pending_jobs, scale, factor, pool_mean, rng, pool)
        draw.on_demand = on_demand
        for k, finish in zip(keys, draw.run(now, params.horizon_s), strict=True):
            out[k].append(finish)
    return out


def _served_on_demand(models: list[_Model]) -> list[bool]:
    """Stages the pool serves first: their jobs start as soon as they are
    ready (hardly any queued while they run) although another stage has a
    backlog, as when a pool favours later stages. The others are served in
    the order their jobs became ready (first come, first served: parents
    first), beyond the share each had recently."""

    def backlog(m: _Model) -> bool:
        return m.snap.queued_jobs > max(0.5 * m.snap.running_jobs, 5)

    flags = []
    for m in models:
        others = any(backlog(o) for o in models if o is not m)
        quick = m.snap.queued_jobs <= max(2, 0.05 * m.snap.running_jobs)
        flags.append(m.snap.running_jobs > 0 and quick and others)
    return flags


# Halfway between "in order" and "at random": used when the present state
# says nothing about it (see _merge_spread_now).
MERGE_SPREAD = 0.5


def _merge_bounds(in_play: float, fan_in: float, merges: float) -> tuple[float, float]:
    """Merge jobs held back by `in_play` unresolved inputs, at the two
    extremes: inputs in play clustered in the last groups (in_play / fan_in
    groups), or spread at random (each straggler blocks its own group)."""
    merges = max(merges, 1.0)
    clustered = min(in_play / fan_in, merges)
    spread = merges * (1.0 - (1.0 - 1.0 / merges) ** in_play)
    return clustered, spread


def _merge_blocked(in_play: float, fan_in: float, merges: float, where: float) -> float:
    """Merge jobs held back, `where` of the way from clustered to spread."""
    clustered, spread = _merge_bounds(in_play, fan_in, merges)
    return clustered + where * (spread - clustered)


def _merge_spread_now(
    parent: StageSnapshot, merge: StageSnapshot, pending: dict[int, int], fan_in: float
) -> float:
    """Where between clustered and spread the merge's inputs in play are now:
    the merge jobs not created yet are the ones held back. Depends on how the
    pool orders the work (first come first served keeps inputs in order; a
    pool that favours later stages scatters the stragglers)."""
    in_play = parent.running_jobs + parent.queued_jobs + parent.retry_jobs + pending[parent.key]
    clustered, spread = _merge_bounds(in_play, fan_in, merge.total_jobs)
    if in_play < 1 or spread - clustered < 2:
        return MERGE_SPREAD  # nothing to learn from
    held = merge.pending_jobs
    return min(max((held - clustered) / (spread - clustered), 0.0), 1.0)


class _Draw:
    """One replay of the remaining work: an event-driven simulation of the
    stages' jobs on a shared pool of slots."""

    def __init__(
        self,
        models: list[_Model],
        parents: list[list[tuple[int, float, float]]],
        children: list[list[int]],
        pending_jobs: dict[int, int],
        scale: int,
        factor: float,
        pool_mean: float,
        rng: random.Random,
        pool: SlotPool | None = None,
    ):
        n = len(models)
        self.models, self.parents, self.children, self.rng = models, parents, children, rng
        self.n, self.scale = n, scale
        self.probs = [rng.betavariate(m.successes + 1, m.failures + 1) for m in models]
        # Each stage's share of the slots is what it is guaranteed; a slot it
        # leaves idle goes to a stage with a queue (the pool is shared).
        self.cap = [m.own_slots * factor / scale for m in models]
        self.pool_cap = max(pool_mean * factor / scale, sum(self.cap), 0.5)
        self.pool = pool
        self.on_demand = [False] * n
        self.total = [m.snap.total_jobs / scale for m in models]
        self.good = [m.snap.succeeded / scale for m in models]
        self.need = [math.ceil((m.snap.target - m.snap.succeeded) / scale) for m in models]
        self.done = [0] * n
        self.finish = [math.inf] * n
        self.running = [0] * n
        self.busy = 0
        self.events: list = []
        self.seq = 0
        self.queue: list[deque] = []
        self.pending: list[float] = []
        for i, m in enumerate(models):
            self.queue.append(deque([m.snap.max_attempts] * round(m.snap.queued_jobs / scale)))
            retries = max(m.snap.max_attempts - 1, 1)
            self.queue[i].extend([retries] * round(m.snap.retry_jobs / scale))
            waiting = pending_jobs[m.snap.key] / scale
            if not parents[i]:
                self.queue[i].extend([m.snap.max_attempts] * round(waiting))
                waiting = 0
            self.pending.append(waiting)
        # Created so far. Not total - pending: jobs whose inputs will never
        # exist (dropped from pending by _drain_state) were never released.
        self.released = [(m.snap.total_jobs - m.snap.pending_jobs) / scale for m in models]

    def _push(self, t: float, i: int, attempts_left: int) -> None:
        self.seq += 1
        ok = self.rng.random() < self.probs[i]
        heapq.heappush(self.events, (t, self.seq, i, ok, attempts_left))
        self.running[i] += 1
        self.busy += 1

    def _dispatch(self, t: float) -> None:
        # The pool follows its hour-of-day profile (when one is known).
        hourly = self.pool.factor(t) if self.pool is not None else 1.0
        while self.busy < self.pool_cap * hourly - 0.5:
            waiting = [i for i in range(self.n) if self.queue[i]]
            if not waiting:
                return
            urgent = [i for i in waiting if self.on_demand[i]]
            below = [i for i in waiting if self.running[i] < self.cap[i] * hourly - 0.5]
            if urgent:
                i = urgent[-1]  # the pool's favourites, latest stage first
            elif below:
                # The stage furthest below its recent share goes first.
                i = min(below, key=lambda j: self.running[j] - self.cap[j] * hourly)
            else:
                i = waiting[0]  # then first come, first served: parents first
            left = self.queue[i].popleft()
            self._push(t + self.models[i].walls.sample(self.rng), i, left - 1)

    def _in_play(self, p: int) -> float:
        return self.running[p] + len(self.queue[p]) + self.pending[p]

    def _release(self, i: int) -> None:
        for c in self.children[i]:
            if self.pending[c] <= 0:
                continue
            links = self.parents[c]
            # One-to-one: a child job exists once its input is good. A k-to-1
            # merge job is ready once none of its inputs is still in play.
            fraction = min(
                min(self.good[p] / max(self.total[p], 1e-9), 1.0)
                if fan_in < FAN_IN_MIN
                else 1.0
                - _merge_blocked(self._in_play(p), fan_in, self.total[c], where) / self.total[c]
                for p, fan_in, where in links
            )
            ready = min(self.total[c] * fraction - self.released[c] + 1e-9, self.pending[c])
            if ready >= 1:
                k = int(ready)
                self.released[c] += k
                self.pending[c] -= k
                self.queue[c].extend([self.models[c].snap.max_attempts] * k)
            if self.pending[c] > 0 and all(self._in_play(p) < 1 for p, _, _ in links):
                # Nothing more can come: a merge runs on whatever inputs exist;
                # a one-to-one child still pending has no input.
                if any(fan_in >= FAN_IN_MIN for _, fan_in, _ in links):
                    attempts = self.models[c].snap.max_attempts
                    self.queue[c].extend([attempts] * round(self.pending[c]))
                self.pending[c] = 0
                self._release(c)

    def run(self, now: float, horizon_s: float) -> list[float]:
        """Finish time of each stage (inf: its target was not reached)."""
        for i, m in enumerate(self.models):
            for elapsed in m.elapsed[:: self.scale]:
                residual = m.walls.residual(self.rng, elapsed)
                self._push(now + residual, i, m.snap.max_attempts - 1)
        for i in range(self.n):
            if self.need[i] <= 0:
                self.finish[i] = now
            self._release(i)
        self._dispatch(now)
        while self.events:
            t, _, i, ok, left = heapq.heappop(self.events)
            if t - now > horizon_s:
                break
            self.running[i] -= 1
            self.busy -= 1
            if ok:
                self.done[i] += 1
                self.good[i] += 1
                if self.done[i] >= self.need[i] and self.finish[i] == math.inf:
                    self.finish[i] = t
            elif left > 0:
                self.queue[i].append(left)
            self._release(i)
            self._dispatch(t)
            if all(f < math.inf for f in self.finish):
                break
        return self.finish


# --- reprocessing estimate -------------------------------------------------------------


@dataclass
class ReprocessingEstimate:
    status: str  # estimated | unknown
    reason: str = ""
    inputs: int = 0
    slots: int = 0
    samples: int = 0
    success_prob: float | None = None
    attempts_per_job: float | None = None
    wall_p50_s: float | None = None
    wall_p95_s: float | None = None
    duration_s: float | None = None
    low_s: float | None = None
    high_s: float | None = None
    slot_hours: float | None = None


def reprocessing_estimate(
    *,
    walls: Sequence[float],
    successes: int,
    failures: int,
    failed_walls: Sequence[float] = (),
    inputs: int,
    slots: int,
    max_attempts: int = 3,
    draws: int = 40,
    seed: int = 7,
    min_samples: int = 5,
) -> ReprocessingEstimate:
    """How long `inputs` jobs take on `slots` slots, from the wall times of good
    attempts (and of failed ones, which also hold a slot).

    Each draw schedules the work greedily on the slots (a free slot takes the
    next attempt; a failed attempt's job goes back to the end of the queue
    until it succeeds or reaches `max_attempts`), with wall times drawn from
    the observed ones. Very large requests use the fluid limit (total slot
    time / slots, plus one long job).
    """
    out = ReprocessingEstimate(status=UNKNOWN, inputs=inputs, slots=slots, samples=len(walls))
    if inputs <= 0:
        out.reason = "nothing to process"
        return out
    if slots <= 0:
        out.reason = "no slots: nothing of this job type is running; give a slot count"
        return out
    if len(walls) < min_samples:
        out.reason = (
            f"only {len(walls)} good attempts of this job type have a wall time; "
            f"{min_samples} are needed"
        )
        return out
    p = (successes + 1) / (successes + failures + 2)
    per_job = attempts_per_job(p, max_attempts)
    ordered = sorted(walls)
    out.success_prob = p
    out.attempts_per_job = per_job
    out.wall_p50_s = percentile(ordered, 0.5)
    out.wall_p95_s = percentile(ordered, 0.95)
    bad = list(failed_walls) or list(walls)
    mean_good = sum(walls) / len(walls)
    mean_bad = sum(bad) / len(bad)
    succeeding = 1 - (1 - p) ** max_attempts  # jobs that end with a good attempt
    failed_attempts = per_job - succeeding
    out.slot_hours = inputs * (succeeding * mean_good + failed_attempts * mean_bad) / HOUR
    rng = random.Random(seed)
    results = []
    if inputs * per_job * draws <= 400_000:
        for _ in range(draws):
            free = [0.0] * min(slots, inputs)
            queue = deque([max_attempts] * inputs)
            end_time = 0.0
            while queue:
                left = queue.popleft()
                t = heapq.heappop(free)
                if rng.random() < p:
                    end = t + rng.choice(walls)
                else:
                    end = t + rng.choice(bad)
                    if left > 1:
                        queue.append(left - 1)
                heapq.heappush(free, end)
                end_time = max(end_time, end)
            results.append(end_time)
    else:
        for _ in range(draws):
            sample = [rng.choice(walls) for _ in range(200)]
            scale = (sum(sample) / len(sample)) / mean_good
            results.append(out.slot_hours * HOUR * scale / slots + max(sample))
    results.sort()
    out.duration_s = percentile(results, 0.5)
    out.low_s = percentile(results, 0.1)
    out.high_s = percentile(results, 0.9)
    out.status = ESTIMATED
    return out
