"""Completion estimates on constructed timelines: the pure estimator
(prodmon.progress.eta) and the same through the database."""

import datetime as dt
import math
import random

import pytest
from django.urls import reverse
from django.utils import timezone

from prodmon import services
from prodmon.models import Job
from prodmon.progress import estimates
from prodmon.progress.eta import (
    DONE,
    ESTIMATED,
    STALLED,
    UNKNOWN,
    AttemptSpan,
    EtaParams,
    History,
    StageSnapshot,
    WallDistribution,
    _model,
    _served_on_demand,
    attempts_per_job,
    estimate_campaign,
    hourly_envelope,
    reprocessing_estimate,
    slot_pool,
    slot_shape,
)
from tests.factories import CampaignFactory
from tests.progress.conftest import NOW, timeline

HOUR = 3600.0
T0 = 1_000_000.0  # "now" of the pure tests


def steady(
    *,
    key=1,
    name="gen",
    total=100,
    succeeded=40,
    slots=10,
    wall_h=1.0,
    fail_prob=0.0,
    hours=8,
    parents=(),
    queued=None,
    max_attempts=3,
    seed=1,
    job_type_history=None,
    target=None,
) -> StageSnapshot:
    """A stage that has run `slots` attempts at a time for `hours`, each
    lasting wall_h, a share `fail_prob` of them failing."""
    rng = random.Random(seed)
    spans = []
    wall = wall_h * HOUR
    start = T0 - hours * HOUR
    for s in range(slots):
        t = start + s * wall / slots
        while t + wall <= T0:
            spans.append(AttemptSpan(t, t + wall, rng.random() >= fail_prob))
            t += wall
        spans.append(AttemptSpan(t, None))  # running now
    running = slots if spans else 0
    if queued is None:
        queued = max(total - succeeded - running, 0)
    return StageSnapshot(
        key=key,
        name=name,
        total_jobs=total,
        target=total if target is None else target,
        succeeded=succeeded,
        parents=tuple(parents),
        max_attempts=max_attempts,
        queued_jobs=queued,
        running_jobs=running,
        first_started=start if spans else None,
        spans=tuple(spans),
        job_type_history=job_type_history,
    )


def hours_left(eta, now: float = T0) -> float:
    return (eta.eta - now) / HOUR


def test_it_estimates_a_linear_throughput_within_tolerance():
    # 10 slots, 1 h per attempt, no failures: 60 jobs left (10 running) = 6 h.
    stages, campaign = estimate_campaign([steady(succeeded=40)], T0)
    eta = stages[1]
    assert eta.status == ESTIMATED
    assert hours_left(eta) == pytest.approx(6.0, rel=0.15)
    assert eta.low < eta.eta < eta.high
    assert eta.slots == pytest.approx(10, rel=0.1)
    assert campaign.eta == eta.eta


def test_it_says_unknown_without_data():
    snap = StageSnapshot(
        key=1, name="gen", total_jobs=100, target=100, succeeded=0, queued_jobs=100
    )
    stages, campaign = estimate_campaign([snap], T0)
    assert stages[1].status == UNKNOWN
    assert stages[1].eta is None
    assert stages[1].low is None
    assert stages[1].high is None
    assert "no attempt" in stages[1].reason
    assert campaign.status == UNKNOWN
    assert campaign.eta is None


def test_it_says_unknown_on_too_few_ended_attempts():
    snap = steady(hours=1, slots=3, wall_h=0.5)  # 3 ended attempts
    stages, _ = estimate_campaign([snap], T0)
    assert stages[1].status == UNKNOWN
    assert "5 are needed" in stages[1].reason


def test_it_reports_a_stage_at_its_target_as_done():
    snap = steady(succeeded=100, queued=0)
    stages, campaign = estimate_campaign([snap], T0)
    assert stages[1].status == DONE
    assert campaign.status == DONE


def idle(snap: StageSnapshot, **changes) -> StageSnapshot:
    """The same stage after everything running has ended: no slot is held."""
    import dataclasses

    spans = tuple(
        AttemptSpan(s.started, s.ended or T0 - 60, False) if s.ended is None else s
        for s in snap.spans
    )
    return dataclasses.replace(snap, spans=spans, running_jobs=0, queued_jobs=0, **changes)


def test_it_calls_a_stage_with_only_unretried_failures_stalled_not_a_date():
    # 90 of 100 good, 10 failed with attempts left, nothing running or queued,
    # no parent: nothing will happen unless someone retries them.
    snap = idle(steady(succeeded=90, target=95), retry_jobs=10)
    stages, campaign = estimate_campaign([snap], T0)
    assert stages[1].status == STALLED
    assert stages[1].eta is None
    assert stages[1].low is None
    assert "10 failed jobs" in stages[1].reason
    assert "need a retry" in stages[1].reason
    assert campaign.status == STALLED
    assert campaign.eta is None
    assert "gen" in campaign.reason
    # The same failures while the stage still has work running: they are
    # assumed to be retried, and the stage gets a date.
    busy = steady(succeeded=80, target=95, queued=0)
    busy = StageSnapshot(**{**busy.__dict__, "retry_jobs": 10})
    stages, _ = estimate_campaign([busy], T0)
    assert stages[1].status == ESTIMATED
    assert stages[1].remaining_attempts >= 15


def test_it_does_not_stall_a_stage_whose_parent_still_sends_inputs():
    parent = steady(key=1, name="gen", succeeded=40)
    child = idle(
        steady(key=2, name="reco", total=35, succeeded=30, parents=(1,), seed=2), retry_jobs=5
    )
    stages, _ = estimate_campaign([parent, child], T0)
    assert stages[2].status == ESTIMATED
    # Once the parent has drained, the same child is stalled.
    done_parent = idle(steady(key=1, name="gen", succeeded=100, queued=0))
    stages, campaign = estimate_campaign([done_parent, child], T0)
    assert stages[1].status == DONE
    assert stages[2].status == STALLED
    assert campaign.status == STALLED


def test_it_inflates_remaining_work_by_the_failure_rate():
    # Target 80 of 100: with half the attempts failing some jobs exhaust their attempts.
    clean, _ = estimate_campaign([steady(succeeded=20, hours=12, target=80)], T0)
    failing, _ = estimate_campaign([steady(succeeded=20, hours=12, fail_prob=0.5, target=80)], T0)
    ratio = hours_left(failing[1]) / hours_left(clean[1])
    # Half the attempts fail, retried up to 3 times: (1 - 0.5^3) / 0.5 = 1.75 attempts a job.
    assert failing[1].attempts_per_job == pytest.approx(1.75, rel=0.1)
    assert ratio == pytest.approx(1.75, rel=0.15)


def test_it_bounds_attempts_per_job_by_max_attempts():
    assert attempts_per_job(1.0, 3) == 1.0
    assert attempts_per_job(0.5, 3) == pytest.approx(1.75)
    assert attempts_per_job(0.1, 3) == pytest.approx(2.71)
    assert attempts_per_job(0.1, 3) < min(1 / 0.1, 3)
    assert attempts_per_job(0.0, 4) == 4


def test_it_never_finishes_a_child_before_its_parent():
    # The child is fast (1 h for what is left) but its parent needs ~6 h more.
    parent = steady(key=1, name="gen", succeeded=40)
    child = steady(
        key=2,
        name="reco",
        succeeded=30,
        total=100,
        slots=10,
        wall_h=0.2,
        hours=4,
        parents=(1,),
        queued=5,
        seed=2,
    )
    stages, campaign = estimate_campaign([parent, child], T0)
    assert stages[2].status == ESTIMATED
    assert stages[2].eta >= stages[1].eta
    assert stages[2].not_before == stages[1].eta
    assert stages[2].limited_by == 1
    assert campaign.eta == pytest.approx(max(stages[1].eta, stages[2].eta))


def test_it_waits_on_an_unknown_parent():
    parent = StageSnapshot(
        key=1, name="gen", total_jobs=100, target=100, succeeded=0, queued_jobs=100
    )
    child = steady(key=2, name="reco", parents=(1,))
    stages, _ = estimate_campaign([parent, child], T0)
    assert stages[2].status == UNKNOWN
    assert "waits on gen" in stages[2].reason


def test_it_estimates_a_stage_that_has_not_started_from_its_job_type_history():
    parent = steady(key=1, name="gen", succeeded=40)
    history = History(walls=(1800.0,) * 50, successes=50, failures=0)
    child = StageSnapshot(
        key=2,
        name="reco",
        total_jobs=100,
        target=100,
        succeeded=0,
        parents=(1,),
        job_type_history=history,
    )
    waiting = StageSnapshot(
        key=2, name="reco", total_jobs=100, target=100, succeeded=0, parents=(1,)
    )
    stages, _ = estimate_campaign([parent, child], T0)
    assert stages[2].status == ESTIMATED
    assert stages[2].basis == "job type history"
    assert stages[2].eta > stages[1].eta
    stages, campaign = estimate_campaign([parent, waiting], T0)
    assert stages[2].status == UNKNOWN
    assert stages[2].not_before == stages[1].eta
    assert campaign.status == UNKNOWN
    assert campaign.not_before >= stages[1].eta


def test_it_corrects_early_wall_times_for_running_attempts():
    # Only the short attempts have ended; the long ones still run (censored).
    dist = WallDistribution(walls=[100, 200, 300], censored=[1000, 1000, 1000, 1000])
    naive = sum([100, 200, 300]) / 3
    assert dist.mean > 2 * naive
    rng = random.Random(3)
    residuals = [dist.residual(rng, 1000) for _ in range(200)]
    assert all(r >= 0 for r in residuals)


def test_it_estimates_reprocessing_time_from_wall_times():
    walls = [3600.0] * 1000
    result = reprocessing_estimate(walls=walls, successes=1000, failures=0, inputs=100, slots=10)
    assert result.status == ESTIMATED
    assert result.duration_s == pytest.approx(10 * 3600, rel=0.05)  # ten waves of one hour
    assert result.wall_p50_s == 3600
    assert result.wall_p95_s == 3600
    assert result.slot_hours == pytest.approx(100 * 1.0, rel=0.05)
    few = reprocessing_estimate(walls=walls[:3], successes=3, failures=0, inputs=100, slots=10)
    assert few.status == UNKNOWN
    assert few.duration_s is None
    no_slots = reprocessing_estimate(walls=walls, successes=9, failures=0, inputs=100, slots=0)
    assert no_slots.status == UNKNOWN
    assert "slot" in no_slots.reason


# --- through the database --------------------------------------------------------------------


@pytest.mark.django_db
def test_it_estimates_a_campaign_from_the_database(gen, reco):
    timeline(gen, done=40, running=10, queued=50, rate_per_hour=10, wall_h=1.0)
    result = estimates.campaign_estimate(campaign=gen.campaign, now=NOW)
    eta = result.stages[gen.pk]
    assert eta.is_estimated
    assert eta.remaining_s / 3600 == pytest.approx(6.0, rel=0.15)
    assert eta.low < eta.at
    assert eta.high is None or eta.at < eta.high
    # reco has no attempts and its job type no history: unknown, never a number.
    assert result.stages[reco.pk].status == UNKNOWN
    assert result.stages[reco.pk].at is None
    assert result.stages[reco.pk].not_before == eta.at
    assert result.campaign.status == UNKNOWN


@pytest.mark.django_db
def test_it_learns_the_pools_day_and_night_from_the_experiments_other_campaigns(experiment, gen):
    # An earlier campaign of the experiment ran for four days: 100 slots by
    # day (06-18 UTC), 40 by night. This campaign has run since 06:00 today
    # (NOW is 12:00) on 100 slots, 2100 one-hour jobs to go: 21 h if the
    # pool stayed as it is now, longer through the night.
    earlier = services.stage_create(
        campaign=CampaignFactory(experiment=experiment, name="mc2024z"),
        name="gen",
        order=1,
        job_type="old-generation",
        expected_jobs=7000,
    )
    for day in range(1, 5):
        end_of_day = NOW.replace(hour=18) - dt.timedelta(days=day)
        timeline(earlier, done=1200, rate_per_hour=100, now=end_of_day, prefix=f"d{day}")
        timeline(
            earlier,
            done=480,
            rate_per_hour=40,
            now=end_of_day + dt.timedelta(hours=12),
            prefix=f"n{day}",
        )
    timeline(gen, done=500, running=100, queued=2000, rate_per_hour=100, wall_h=1.0)
    gen.expected_jobs = 2600
    gen.save()
    profiled = estimates.campaign_estimate(campaign=gen.campaign, now=NOW).stages[gen.pk]
    earlier.campaign.delete()
    flat = estimates.campaign_estimate(campaign=gen.campaign, now=NOW).stages[gen.pk]
    assert flat.remaining_s / 3600 == pytest.approx(21, rel=0.15)
    # 100 slots to 18:00 (600 jobs), 40 to 06:00 (480), then 100 an hour:
    # the last of 2100 at about 16:00 tomorrow, some 28 h away.
    assert profiled.remaining_s / 3600 == pytest.approx(28, rel=0.12)
    assert profiled.slots == pytest.approx(100, rel=0.15)


@pytest.mark.django_db
def test_it_counts_failures_and_retries_from_the_database(gen):
    timeline(gen, done=40, running=10, queued=50, fail_every=2, wall_h=1.0)
    eta = estimates.campaign_estimate(campaign=gen.campaign, now=NOW).stages[gen.pk]
    # 59 attempts ended, 19 failed: about one in three.
    assert eta.success_prob == pytest.approx(40 / 59, abs=0.03)
    assert eta.attempts_per_job > 1.3


@pytest.mark.django_db
def test_it_shows_estimates_on_the_campaign_page(client, member, gen, reco):
    timeline(gen, done=40, running=10, queued=50, now=timezone.now())
    client.force_login(member)
    html = client.get(gen.campaign.get_absolute_url()).content.decode()
    assert 'class="eta known"' in html
    assert 'class="eta unknown"' in html  # reco
    assert "no attempt of this stage has ended yet" in html


@pytest.mark.django_db
def test_it_shows_a_stage_with_nothing_running_below_its_target_as_stalled(
    client, member, gen, reco
):
    # The demo's gen stage: most jobs good, a few failed once (attempts left),
    # nothing running or queued. That is no "in 0m": it needs recovery.
    now = timezone.now()
    timeline(gen, done=92, rate_per_hour=30, wall_h=0.01, now=now)
    failed = timeline(gen, done=0, queued=8, now=now, prefix="bad")
    Job.objects.filter(pk__in=[j.pk for j in failed]).update(state=Job.State.FAILED)
    client.force_login(member)
    for url in (reverse("campaign-list"), gen.campaign.get_absolute_url()):
        html = client.get(url).content.decode()
        assert "in 0m" not in html
        assert 'class="eta stalled"' in html or 'class="value stalled"' in html
    html = client.get(gen.campaign.get_absolute_url()).content.decode()
    assert "8 failed jobs with attempts left need a retry" in html
    assert reverse("stage-recovery", args=[gen.pk]) in html
    html = client.get(reverse("progress-stage", args=[gen.pk])).content.decode()
    assert "<dt>Why stalled</dt>" in html
    assert 'class="eta stalled"' in html
    data = client.get(reverse("api-campaign-progress", args=[gen.campaign.pk])).json()
    assert data["stages"][0]["eta"]["status"] == "stalled"
    assert data["stages"][0]["eta"]["eta"] is None
    assert data["eta"]["status"] == "stalled"


@pytest.mark.django_db
def test_it_serves_the_estimate_as_json(client, member, gen, reco):
    timeline(gen, done=40, running=10, queued=50, now=timezone.now())
    client.force_login(member)
    data = client.get(reverse("api-campaign-progress", args=[gen.campaign.pk])).json()
    [g, r] = data["stages"]
    assert g["name"] == "gen"
    assert g["eta"]["status"] == "estimated"
    assert g["eta"]["remaining_seconds"] / 3600 == pytest.approx(6.0, rel=0.3)
    assert g["counts"]["succeeded"] == 40
    assert r["depends_on"] == [gen.pk]
    assert r["eta"]["status"] == "unknown"
    assert r["eta"]["eta"] is None
    assert data["eta"]["status"] == "unknown"


@pytest.mark.django_db
def test_it_estimates_reprocessing_a_job_type(client, member, gen):
    timeline(gen, done=40, running=10, queued=0, wall_h=2.0, now=timezone.now())
    client.force_login(member)
    response = client.get(
        reverse("progress-estimate"), {"job_type": "generation", "inputs": 100, "slots": 20}
    )
    result = response.context["result"]
    assert result.estimate.status == ESTIMATED
    # 100 jobs of 2 h on 20 slots: five waves (six if a failure is drawn:
    # the success rate after 40 good attempts is 41/42, not 1).
    assert 10.0 <= result.estimate.duration_s / 3600 <= 12.0
    default = client.get(reverse("progress-estimate"), {"job_type": "generation", "inputs": 100})
    assert default.context["result"].estimate.slots == 10  # running now
    assert default.context["result"].slots_source == "running now"


@pytest.mark.django_db
def test_it_hides_other_experiments_job_types(client, outsider, gen):
    timeline(gen, done=10)
    client.force_login(outsider)
    response = client.get(reverse("progress-estimate"), {"job_type": "generation", "inputs": 10})
    assert response.context["result"] is None
    assert "generation" not in response.content.decode()


@pytest.mark.parametrize(
    ("policy", "stage"), [("fifo", 0), ("fifo", 1), ("fifo", 2), ("downstream", 0)]
)
def test_it_meets_the_benchmark_target_at_25_percent(policy, stage):
    # bench/eta.py's replay (seed 1): gen, sim and reco first come first
    # served, and gen when the pool favours later stages (gen then runs for
    # two days of day and night). The merge stage misses it (docs/progress.md).
    from bench import eta as bench

    jobs = bench.simulate(seed=1, base_slots=400, policy=policy)
    earlier = bench.pool_history(1001, 400, policy)
    done = sorted(j.done_at for j in jobs[stage] if j.done_at is not None)
    finish = bench.crossing(done, bench.target_of(bench.STAGES[stage]))
    t = bench.crossing(done, math.ceil(0.25 * bench.target_of(bench.STAGES[stage])))
    snaps = bench.snapshots_at(jobs, t, offset=bench.EPOCH)
    stages, _ = estimate_campaign(snaps, bench.EPOCH + t, pool_history=earlier)
    eta = stages[stage]
    assert finish - t > 3 * HOUR
    assert abs(eta.eta - bench.EPOCH - finish) / (finish - t) < 0.15
    assert eta.low <= bench.EPOCH + finish <= eta.high


# --- slots that follow the hour of the day, the pool's order, stragglers ----------------------

DAY = 24 * HOUR
MIDNIGHT = 1_000_000 * DAY  # a UTC midnight, so hours of the day are easy to read


def day_night_history(days: int, day_slots: int, night_slots: int) -> list[AttemptSpan]:
    """Earlier campaigns on the same pool: `day_slots` busy 06:00-18:00 UTC,
    `night_slots` otherwise, in one-hour attempts, for `days` days."""
    spans = []
    for d in range(days):
        for h in range(24):
            start = MIDNIGHT - (days - d) * DAY + h * HOUR
            n = day_slots if 6 <= h < 18 else night_slots
            spans += [AttemptSpan(start, start + HOUR, True)] * n
    return spans


def daytime_stage(now: float, slots: int = 100, remaining: int = 2400) -> StageSnapshot:
    """A stage that started at 08:00 today and has had `slots` one-hour
    attempts running all day; `remaining` jobs to go."""
    spans = []
    t = MIDNIGHT + 8 * HOUR
    while t + HOUR <= now:
        spans += [AttemptSpan(t, t + HOUR, True)] * slots
        t += HOUR
    spans += [AttemptSpan(t, None)] * slots
    done = len(spans) - slots
    return StageSnapshot(
        key=1,
        name="gen",
        total_jobs=done + remaining,
        target=done + remaining,
        succeeded=done,
        queued_jobs=remaining - slots,
        running_jobs=slots,
        first_started=MIDNIGHT + 8 * HOUR,
        spans=tuple(spans),
    )


def test_it_learns_the_hour_of_day_profile_and_expects_the_night():
    now = MIDNIGHT + 14 * HOUR
    stage = daytime_stage(now)
    history = day_night_history(days=4, day_slots=100, night_slots=40)
    envelope = hourly_envelope([*history, *stage.spans], now, 7)
    shape = slot_shape(envelope, 18)
    assert shape is not None
    assert shape[12] / shape[2] == pytest.approx(100 / 40, rel=0.02)
    assert sum(shape) / 24 == pytest.approx(1.0)
    # Seen only by day, the campaign alone looks like 100 slots round the clock
    # (2400 one-hour jobs: a day). Knowing the pool, the night is slower:
    # 100 slots 06:00-18:00 and 40 otherwise: 400 jobs by 18:00, 880 by
    # 06:00, 2080 by 18:00 the next day, the last 320 by 02:00: 36 h.
    flat, _ = estimate_campaign([stage], now)
    profiled, _ = estimate_campaign([stage], now, pool_history=history)
    assert hours_left(flat[1], now) == pytest.approx(24, rel=0.1)
    assert hours_left(profiled[1], now) == pytest.approx(36, rel=0.1)
    assert profiled[1].slots == pytest.approx(100, rel=0.1)  # what it has now, at 14:00


def test_it_uses_no_profile_from_less_than_most_of_a_day():
    now = MIDNIGHT + 14 * HOUR
    stage = daytime_stage(now)  # six hours of the day seen
    assert slot_shape(hourly_envelope(stage.spans, now, 7), 18) is None
    assert slot_pool([stage], now, EtaParams()).factor(now) == 1.0


def test_it_releases_a_childs_jobs_when_its_parents_stragglers_succeed():
    # The parent: 90 good, 5 exhausted (their children will never exist), 5
    # still running. The child: 88 good, 2 running, and it needs 93: the
    # stragglers' children. They must be released when the stragglers end.
    parent = StageSnapshot(
        key=1,
        name="sim",
        total_jobs=100,
        target=95,
        succeeded=90,
        exhausted_jobs=5,
        running_jobs=5,
        spans=tuple(
            [AttemptSpan(T0 - 8 * HOUR + i * 600, T0 - 7 * HOUR + i * 600, True) for i in range(40)]
            + [AttemptSpan(T0 - 0.5 * HOUR, None)] * 5
        ),
        first_started=T0 - 8 * HOUR,
    )
    child = StageSnapshot(
        key=2,
        name="reco",
        total_jobs=100,
        target=93,
        succeeded=88,
        running_jobs=2,
        parents=(1,),
        spans=tuple(
            [
                AttemptSpan(T0 - 6 * HOUR + i * 600, T0 - 5.5 * HOUR + i * 600, True)
                for i in range(30)
            ]
            + [AttemptSpan(T0 - 0.2 * HOUR, None)] * 2
        ),
        first_started=T0 - 6 * HOUR,
    )
    stages, _ = estimate_campaign([parent, child], T0)
    assert stages[2].status == ESTIMATED
    # After the stragglers (about half an hour more) and then its own half hour.
    assert T0 + 0.5 * HOUR < stages[2].eta < T0 + 4 * HOUR


def test_it_serves_first_a_stage_whose_jobs_start_as_soon_as_ready():
    backlog = steady(key=1, name="gen", total=1000, succeeded=100, slots=20)
    quick = steady(key=2, name="sim", total=1000, succeeded=50, slots=30, parents=(1,), queued=0)
    fifo_child = steady(
        key=2, name="sim", total=1000, succeeded=50, slots=30, parents=(1,), queued=400
    )
    for child, expected in ((quick, [False, True]), (fifo_child, [False, False])):
        pool = slot_pool([backlog, child], T0, EtaParams())
        models = [_model(s, T0, EtaParams(), pool, False)[0] for s in (backlog, child)]
        assert _served_on_demand(models) == expected


def test_it_measures_wall_times_on_a_cohort_by_start_not_the_latest_ends():
    # 100 slots since 5 h ago, back to back; half the jobs last 1 h, half 3 h
    # (alternately, as they start): a mean of 2 h. The latest 60 ends (with
    # the running ones censored) over-represent the long ones; a cohort by
    # start (running ones censored) is fair.
    spans, free, k = [], [T0 - 5 * HOUR + s * 60 for s in range(100)], 0
    while True:
        free.sort()
        t = free.pop(0)
        if t >= T0:
            break
        wall = HOUR if k % 2 else 3 * HOUR
        k += 1
        spans.append(AttemptSpan(t, t + wall if t + wall <= T0 else None, True))
        free.append(t + wall)
    running = [T0 - s.started for s in spans if s.ended is None]
    latest = sorted((s for s in spans if s.ended), key=lambda s: s.ended)[-60:]
    biased = WallDistribution([s.wall for s in latest], running).mean
    assert biased / HOUR > 2.3  # the bias the cohort avoids
    snap = StageSnapshot(
        key=1,
        name="gen",
        total_jobs=5000,
        target=5000,
        succeeded=len(spans) - len(running),
        queued_jobs=4000,
        running_jobs=len(running),
        first_started=T0 - 5 * HOUR,
        spans=tuple(spans),
    )
    stages, _ = estimate_campaign([snap], T0, EtaParams(recent_ends=60))
    assert stages[1].mean_wall_s / HOUR == pytest.approx(2.0, rel=0.05)


# --- the estimates refresher (bench.pages: pages must not replay on the request path) ---


@pytest.mark.django_db
def test_the_refresher_caches_active_campaigns_so_pages_read_without_queries(
    campaign, gen, experiment
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from prodmon.models import Campaign
    from prodmon.progress.tasks import estimates_refresh_task
    from tests.factories import CampaignFactory

    done = CampaignFactory(experiment=experiment, name="old", state=Campaign.State.COMPLETED)
    estimates_refresh_task()  # the beat task, run in-process
    with CaptureQueriesContext(connection) as ctx:
        found = estimates.campaigns_estimate(campaigns=[campaign])
    assert len(ctx.captured_queries) == 0
    assert campaign.pk in found
    assert found[campaign.pk].computed_at is not None
    # Only active campaigns are refreshed: a completed one is computed on demand.
    with CaptureQueriesContext(connection) as ctx:
        estimates.campaigns_estimate(campaigns=[done])
    assert len(ctx.captured_queries) > 0
    assert estimates.campaigns_estimate_refresh() == 1


@pytest.mark.django_db
def test_the_campaign_list_never_replays_on_the_request_path(client, member, campaign, gen):
    from django.core.cache import cache

    # The refresher was queued a moment ago and has not run yet: the page says
    # so instead of computing the estimate itself.
    cache.add(estimates.REFRESH_QUEUED_KEY, 1, timeout=60)
    client.force_login(member)
    html = client.get(reverse("campaign-list")).content.decode()
    assert "ETA being computed" in html
    assert not cache.get_many([estimates._cache_key(campaign)])
    # Once it has run, the list shows the estimate from the cache.
    estimates.campaigns_estimate_refresh()
    html = client.get(reverse("campaign-list")).content.decode()
    assert "ETA being computed" not in html
    assert "campaign-eta" in html
