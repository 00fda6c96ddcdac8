"""Replay a finished campaign through the portal's ETA code and score it.

    python -m bench.eta [--seed N] [--policy fifo|downstream] [--slots N] [--no-history]
    python -m bench.eta --sweep 6     # seeds 1-6 under both policies: a table per stage
    python -m bench.eta --sweep 6 --start-seed 7   # seeds 7-12: a check on unseen seeds

A discrete-event simulation produces a realistic finished campaign: four
stages with dependencies (gen -> sim -> reco -> merge, a merge job taking 50
reco outputs), per-job wall times from a lognormal per stage, a failure mix
(transient failures that end early, memory kills near the end, a few bad
inputs that fail every attempt) with retries after a resubmission delay, and
a shared slot pool that follows a day/night cycle with a weekend dip. Jobs
become ready when their parents' outputs exist; the pool serves ready
attempts first-come first-served (HTCondor's default for one user), or with
--policy downstream, later stages first.

At the moments each stage reaches 25 %, 50 % and 75 % of its completion
target, the history up to that moment (and nothing after it) is turned into
the same StageSnapshot objects the portal builds from its database and passed
to prodmon.progress.eta.estimate_campaign, with the attempts of an earlier
campaign on the same pool (four days before) as the pool's history, from
which it learns the hour-of-day profile of the slots. Times are given to the
estimator as UTC POSIX seconds (simulation time 0 is START). The error is
|predicted finish - actual finish| / (actual finish - now), a fraction of the
time that was really left. The last line is the mean over stages:

    eta_error_25=<f> eta_error_50=<f> eta_error_75=<f>
"""

import argparse
import datetime as dt
import heapq
import math
import random
import time
from dataclasses import dataclass, field

from bench._common import machine
from prodmon.progress.eta import (
    AttemptSpan,
    EtaParams,
    History,
    StageSnapshot,
    estimate_campaign,
)

HOUR = 3600.0
START = dt.datetime(2025, 3, 6, 9, 0, tzinfo=dt.UTC)  # a Thursday morning: the weekend comes
MAX_ATTEMPTS = 3
RETRY_DELAY = 15 * 60
TICK = 5 * 60
CHECKPOINTS = (0.25, 0.50, 0.75)


@dataclass(frozen=True)
class StageSpec:
    name: str
    jobs: int
    median_wall_h: float
    sigma: float
    transient_fail: float  # per attempt, ends early
    memory_kill: float  # per attempt, ends near the end of the wall time
    bad_inputs: float  # fraction of jobs that fail every attempt
    parent: str | None = None
    fan_in: int = 1  # parent jobs per job
    completion_pct: int = 95


STAGES = (
    StageSpec("gen", 2000, 2.0, 0.40, 0.05, 0.00, 0.010),
    StageSpec("sim", 2000, 3.5, 0.50, 0.05, 0.04, 0.005, parent="gen"),
    StageSpec("reco", 2000, 1.2, 0.35, 0.04, 0.01, 0.005, parent="sim"),
    StageSpec("merge", 40, 0.7, 0.30, 0.03, 0.00, 0.000, parent="reco", fan_in=50),
)


def capacity(t: float, base: int) -> int:
    """Slots the pool gives the campaign: 40 % at 03:00, 100 % at 15:00, x0.75 at weekends."""
    when = START + dt.timedelta(seconds=t)
    hour = when.hour + when.minute / 60
    diurnal = 0.7 + 0.3 * math.cos(2 * math.pi * (hour - 15) / 24)
    weekend = 0.75 if when.weekday() >= 5 else 1.0
    return max(1, round(base * diurnal * weekend))


@dataclass
class SimJob:
    stage: int
    index: int
    bad: bool
    wall: float  # the job's nominal wall time; attempts vary around it
    ready: float | None = None
    attempts: list = field(default_factory=list)  # [start, end, succeeded]
    done_at: float | None = None  # good attempt's end
    exhausted_at: float | None = None


def simulate(seed: int, base_slots: int, policy: str) -> list[list[SimJob]]:
    rng = random.Random(seed)
    jobs = [
        [
            SimJob(
                stage=si,
                index=j,
                bad=rng.random() < spec.bad_inputs,
                wall=spec.median_wall_h * HOUR * math.exp(rng.gauss(0, spec.sigma)),
            )
            for j in range(spec.jobs)
        ]
        for si, spec in enumerate(STAGES)
    ]
    children = {
        si: i for i, s in enumerate(STAGES) for si, p in enumerate(STAGES) if s.parent == p.name
    }
    resolved = [[0] * STAGES[ci].jobs for ci in range(len(STAGES))]  # parents resolved per job
    produced_any = [[False] * STAGES[ci].jobs for ci in range(len(STAGES))]

    queue: list = []  # (priority, ready time, seq, stage, index)
    events: list = []  # (time, seq, kind, payload)
    seq = 0

    def enqueue(job: SimJob, t: float) -> None:
        # A retried job keeps its place (its first ready time), as an HTCondor
        # job released from hold keeps its queue date.
        nonlocal seq
        prio = -job.stage if policy == "downstream" else 0
        seq += 1
        heapq.heappush(queue, (prio, job.ready, seq, job.stage, job.index))

    def schedule(t: float, kind: str, payload) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, payload))

    for job in jobs[0]:
        job.ready = 0.0
        enqueue(job, 0.0)
    schedule(0.0, "tick", None)
    busy = 0

    def parent_resolved(stage: int, index: int, produced: bool, t: float) -> None:
        ci = children.get(stage)
        if ci is None:
            return
        child_index = index // STAGES[ci].fan_in
        resolved[ci][child_index] += 1
        produced_any[ci][child_index] |= produced
        if resolved[ci][child_index] == STAGES[ci].fan_in:
            if not produced_any[ci][child_index]:
                # None of its inputs exists: the child never runs, and neither
                # do the jobs that would have read its output.
                parent_resolved(ci, child_index, False, t)
                return
            child = jobs[ci][child_index]
            child.ready = t
            enqueue(child, t)

    def start_ready(t: float) -> None:
        nonlocal busy
        cap = capacity(t, base_slots)
        while busy < cap and queue:
            _, _, _, si, ji = heapq.heappop(queue)
            job = jobs[si][ji]
            spec = STAGES[si]
            wall = job.wall * math.exp(rng.gauss(0, 0.1))
            roll = rng.random()
            if job.bad:
                ok, wall = False, wall * rng.uniform(0.02, 0.2)
            elif roll < spec.transient_fail:
                ok, wall = False, wall * rng.uniform(0.02, 0.9)
            elif roll < spec.transient_fail + spec.memory_kill:
                ok, wall = False, wall * rng.uniform(0.8, 1.0)
            else:
                ok = True
            attempt = [t, t + wall, ok]
            job.attempts.append(attempt)
            busy += 1
            schedule(t + wall, "end", (si, ji))

    while events:
        t, _, kind, payload = heapq.heappop(events)
        if kind == "tick":
            if queue or busy or len(events):
                schedule(t + TICK, "tick", None)
        elif kind == "end":
            busy -= 1
            si, ji = payload
            job = jobs[si][ji]
            _, _, ok = job.attempts[-1]
            if ok:
                job.done_at = t
                parent_resolved(si, ji, True, t)
            elif len(job.attempts) >= MAX_ATTEMPTS:
                job.exhausted_at = t
                parent_resolved(si, ji, False, t)
            else:
                schedule(t + RETRY_DELAY, "retry", (si, ji))
        elif kind == "retry":
            enqueue(jobs[payload[0]][payload[1]], t)
        start_ready(t)
    return jobs


def target_of(spec: StageSpec) -> int:
    return math.ceil(spec.jobs * spec.completion_pct / 100)


EPOCH = START.timestamp()  # simulation time 0 as POSIX time: the estimator sees UTC hours
EARLIER = EPOCH - 4 * 24 * HOUR  # the earlier campaign started four days before


def pool_history(seed: int, base_slots: int, policy: str) -> list[AttemptSpan]:
    """The attempts of an earlier campaign on the same pool (another seed,
    four days before): what the portal reads as the experiment's last days,
    from which the hour-of-day profile of the slots is learned."""
    return [
        AttemptSpan(EARLIER + a[0], EARLIER + a[1], a[2])
        for stage in simulate(seed, base_slots, policy)
        for j in stage
        for a in j.attempts
    ]


def job_type_histories(seed: int, base_slots: int, policy: str) -> list[History]:
    """The latest 500 ended attempts of each stage's job type in an earlier
    campaign of the same kind (another seed): what the portal falls back on
    before a stage has ended attempts of its own."""
    out = []
    for stage in simulate(seed, base_slots, policy):
        ended = sorted((a for j in stage for a in j.attempts), key=lambda a: a[1])[-500:]
        ok = sum(1 for a in ended if a[2])
        out.append(
            History(walls=tuple(a[1] - a[0] for a in ended), successes=ok, failures=len(ended) - ok)
        )
    return out


def snapshots_at(
    jobs: list[list[SimJob]], t: float, histories: list[History] | None = None, offset: float = 0
) -> list[StageSnapshot]:
    """What the portal's database would hold at time t, as estimator input
    (times shifted by `offset`)."""
    out = []
    for si, spec in enumerate(STAGES):
        spans, succeeded, queued, running, exhausted = [], 0, 0, 0, 0
        first = None
        for job in jobs[si]:
            is_running = False
            failed_ended = 0
            for start, end, ok in job.attempts:
                if start > t:
                    continue
                first = start if first is None else min(first, start)
                if end <= t:
                    spans.append(AttemptSpan(offset + start, offset + end, ok))
                    failed_ended += not ok
                else:
                    spans.append(AttemptSpan(offset + start, None, False))
                    is_running = True
            if job.done_at is not None and job.done_at <= t:
                succeeded += 1
            elif is_running:
                running += 1
            elif failed_ended >= MAX_ATTEMPTS:
                exhausted += 1
            elif job.ready is not None and job.ready <= t:
                queued += 1
        parent = [i for i, p in enumerate(STAGES) if p.name == spec.parent]
        out.append(
            StageSnapshot(
                key=si,
                name=spec.name,
                total_jobs=spec.jobs,
                target=target_of(spec),
                exhausted_jobs=exhausted,
                succeeded=succeeded,
                parents=tuple(parent),
                max_attempts=MAX_ATTEMPTS,
                queued_jobs=queued,
                running_jobs=running,
                first_started=None if first is None else offset + first,
                spans=tuple(spans),
                job_type_history=histories[si] if histories else None,
            )
        )
    return out


def crossing(done_times: list[float], count: int) -> float | None:
    return done_times[count - 1] if 0 < count <= len(done_times) else None


def fmt_h(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds / HOUR:6.1f} h"


def score(
    seed: int,
    slots: int,
    policy: str,
    history: bool,
    params: EtaParams | None = None,
    timings: list[float] | None = None,
):
    """Replay one campaign; the checkpoints as rows and the campaign's errors.
    `timings` collects the seconds each estimate_campaign call took."""
    params = params or EtaParams()
    jobs = simulate(seed, slots, policy)
    histories = job_type_histories(seed + 1000, slots, policy) if history else None
    earlier = pool_history(seed + 1000, slots, policy) if history else []

    def estimate(t):
        snaps = snapshots_at(jobs, t, histories, EPOCH)
        began = time.perf_counter()
        etas, camp = estimate_campaign(snaps, EPOCH + t, params, earlier)
        if timings is not None:
            timings.append(time.perf_counter() - began)
        for e in [*etas.values(), camp]:
            for name in ("eta", "low", "high", "not_before"):
                if getattr(e, name) is not None:
                    setattr(e, name, getattr(e, name) - EPOCH)
        return etas, camp

    done = [sorted(j.done_at for j in stage if j.done_at is not None) for stage in jobs]
    finish = [crossing(done[si], target_of(spec)) for si, spec in enumerate(STAGES)]
    rows = []
    for si, spec in enumerate(STAGES):
        if finish[si] is None:
            continue
        for q in CHECKPOINTS:
            t = crossing(done[si], math.ceil(q * target_of(spec)))
            etas, _ = estimate(t)
            est = etas[si]
            if est.eta is None:
                err, inside = 1.0, None  # an unknown counts as fully wrong
            else:
                err = abs(est.eta - finish[si]) / (finish[si] - t)
                inside = est.low <= finish[si] <= (est.high if est.high is not None else math.inf)
            rows.append(
                {
                    "stage": spec.name,
                    "q": q,
                    "now": t,
                    "eta": est.eta,
                    "low": est.low,
                    "high": est.high,
                    "actual": finish[si],
                    "error": err,
                    "inside": inside,
                }
            )
    camp_done = sorted(x for stage in done for x in stage)
    camp_target = sum(target_of(s) for s in STAGES)
    camp_finish = max(f for f in finish if f is not None)
    campaign = {}
    for q in CHECKPOINTS:
        t = crossing(camp_done, math.ceil(q * camp_target))
        _, camp = estimate(t)
        campaign[q] = None if camp.eta is None else abs(camp.eta - camp_finish) / (camp_finish - t)
    return jobs, finish, rows, campaign


def sweep(seeds: list[int], slots: int, history: bool) -> None:
    """Every seed under both scheduling policies: the error per stage, scenario
    and checkpoint (mean and worst over the seeds) and the band's coverage."""
    print(
        f"sweep: seeds {seeds[0]}-{seeds[-1]}, pool {slots}, history {'yes' if history else 'no'}"
    )
    worst_25 = 0.0
    timings: list[float] = []
    for policy in ("fifo", "downstream"):
        table: dict = {}
        inside = total = 0
        for seed in seeds:
            _, _, rows, _ = score(seed, slots, policy, history, timings=timings)
            for r in rows:
                table.setdefault((r["stage"], r["q"]), []).append(r["error"])
                if r["inside"] is not None:
                    inside += r["inside"]
                    total += 1
        print(f"  policy {policy}: error mean / worst over {len(seeds)} seeds")
        print("    stage     25 %           50 %           75 %")
        for spec in STAGES:
            cells = []
            for q in CHECKPOINTS:
                v = table.get((spec.name, q), [])
                cells.append(f"{sum(v) / len(v):.3f} / {max(v):.3f}" if v else "—")
                if q == 0.25 and v:
                    worst_25 = max(worst_25, max(v))
            print(f"    {spec.name:<8}  " + "  ".join(f"{c:<13}" for c in cells))
        print(f"    band coverage {inside}/{total}")
    print(f"worst stage error at 25 % over all seeds and policies: {worst_25:.3f}")
    print(f"estimate_campaign: {1000 * sum(timings) / len(timings):.0f} ms per call (mean)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--start-seed",
        type=int,
        default=1,
        help="with --sweep: the first seed (settings are chosen on 1-6 and checked on 7-12)",
    )
    parser.add_argument("--slots", type=int, default=400, help="pool size at the daily peak")
    parser.add_argument("--policy", choices=("fifo", "downstream"), default="fifo")
    parser.add_argument(
        "--no-history",
        action="store_true",
        help="no earlier campaign of the same job types (stages are unknown until they start)",
    )
    parser.add_argument(
        "--sweep",
        metavar="N",
        type=int,
        default=0,
        help="instead: N seeds from --start-seed under both policies, a table per stage",
    )
    args = parser.parse_args(argv)
    began = time.monotonic()
    if args.sweep:
        seeds = list(range(args.start_seed, args.start_seed + args.sweep))
        sweep(seeds, args.slots, not args.no_history)
        print(f"elapsed {time.monotonic() - began:.1f} s")
        return

    print("bench.eta: replay a finished campaign through prodmon.progress.eta")
    print(machine())
    print(
        f"config: seed={args.seed} policy={args.policy} pool={args.slots} slots at 15:00, "
        f"40% at 03:00, x0.75 on Sat/Sun; start {START:%a %Y-%m-%d %H:%M} UTC; "
        f"max_attempts={MAX_ATTEMPTS}, retry after {RETRY_DELAY // 60} min"
    )
    for spec in STAGES:
        print(
            f"  stage {spec.name:<6} {spec.jobs:>5} jobs  wall lognormal(median "
            f"{spec.median_wall_h} h, sigma {spec.sigma})  fail/attempt "
            f"{spec.transient_fail:.0%} early + {spec.memory_kill:.0%} memory; "
            f"{spec.bad_inputs:.1%} bad inputs"
            + (f"; needs {spec.parent} (x{spec.fan_in})" if spec.parent else "")
            + f"; complete at {spec.completion_pct}%"
        )
    print(
        "job-type history: "
        + ("none" if args.no_history else f"an earlier campaign (seed {args.seed + 1000})")
    )
    timings: list[float] = []
    jobs, finish, rows, campaign = score(
        args.seed, args.slots, args.policy, not args.no_history, timings=timings
    )
    done = [sorted(j.done_at for j in stage if j.done_at is not None) for stage in jobs]
    attempts = sum(len(j.attempts) for stage in jobs for j in stage)
    print(f"simulated {attempts} attempts; stage finishes (to target):")
    for si, spec in enumerate(STAGES):
        print(f"  {spec.name:<6} finished at {fmt_h(finish[si])}  ({len(done[si])} succeeded)")
    for spec, f in zip(STAGES, finish, strict=True):
        if f is None:
            print(f"  {spec.name}: never reached its target; skipped")
    errors = {q: [] for q in CHECKPOINTS}
    inside = total = 0
    print("checkpoint  stage   now        predicted  actual     rel.error  in band")
    for r in rows:
        errors[r["q"]].append(r["error"])
        if r["inside"] is None:
            band = "unknown"
        else:
            inside += r["inside"]
            total += 1
            band = f"{'yes' if r['inside'] else 'no '} [{fmt_h(r['low'])} .. {fmt_h(r['high'])}]"
        print(
            f"  {r['q']:>4.0%}     {r['stage']:<6} {fmt_h(r['now'])}  {fmt_h(r['eta'])}  "
            f"{fmt_h(r['actual'])}  {r['error']:9.3f}  {band}"
        )
    line = [f"{q:.0%}: " + ("unknown" if v is None else f"{v:.3f}") for q, v in campaign.items()]
    print("campaign ETA relative error at campaign " + ", ".join(line))
    if total:
        print(f"band coverage: {inside}/{total} actual finishes inside the predicted band")
    print(f"estimate_campaign: {1000 * sum(timings) / len(timings):.0f} ms per call (mean)")
    print(f"elapsed {time.monotonic() - began:.1f} s")
    means = {q: sum(v) / len(v) for q, v in errors.items() if v}
    print(
        f"eta_error_25={means[0.25]:.4f} eta_error_50={means[0.5]:.4f} "
        f"eta_error_75={means[0.75]:.4f}"
    )


if __name__ == "__main__":
    main()
