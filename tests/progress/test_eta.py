"""Completion estimates on constructed timelines: the pure estimator
(prodmon.progress.eta) and the same through the database."""

import math
import random

import pytest
from django.urls import reverse
from django.utils import timezone

from prodmon.progress import estimates
from prodmon.progress.eta import (
    DONE,
    ESTIMATED,
    UNKNOWN,
    AttemptSpan,
    History,
    StageSnapshot,
    WallDistribution,
    attempts_per_job,
    estimate_campaign,
    reprocessing_estimate,
)
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


def hours_left(eta) -> float:
    return (eta.eta - T0) / HOUR


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


@pytest.mark.parametrize("stage", [0, 1])
def test_it_meets_the_benchmark_target_at_25_percent(stage):
    # bench/eta.py's default replay: gen and sim (first and second stage).
    from bench import eta as bench

    jobs = bench.simulate(seed=1, base_slots=400, policy="fifo")
    done = sorted(j.done_at for j in jobs[stage] if j.done_at is not None)
    finish = bench.crossing(done, bench.target_of(bench.STAGES[stage]))
    t = bench.crossing(done, math.ceil(0.25 * bench.target_of(bench.STAGES[stage])))
    stages, _ = estimate_campaign(bench.snapshots_at(jobs, t), t)
    assert finish - t > 3 * HOUR
    assert abs(stages[stage].eta - finish) / (finish - t) < 0.15
    assert stages[stage].low <= finish <= stages[stage].high


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
