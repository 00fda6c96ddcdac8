"""Resource advice from scout jobs: p50/p95 of the first good attempts, the
suggested requests, and the attempts killed for memory."""

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from prodmon.models import Attempt, Job
from prodmon.progress.scouts import (
    memory_kill_reason,
    scout_resource_suggestion,
    stage_resource_suggestion,
)
from tests.factories import AttemptFactory, JobFactory

pytestmark = pytest.mark.django_db

MIB = 1024**2
GIB = 1024**3


def scouts(stage, n, *, start=None):
    """n good attempts ending one minute apart: wall (i+1) x 100 s,
    RSS (i+1) x 100 MiB, disk (i+1) GiB."""
    start = start or timezone.now() - dt.timedelta(days=1)
    for i in range(n):
        job = JobFactory(stage=stage, key=f"scout_{i:03d}", state=Job.State.SUCCEEDED)
        AttemptFactory(
            job=job,
            number=1,
            status=Attempt.Status.SUCCEEDED,
            ended_at=start + dt.timedelta(minutes=i),
            wall_s=(i + 1) * 100.0,
            peak_rss_bytes=(i + 1) * 100 * MIB,
            disk_bytes=(i + 1) * GIB,
        )


def test_it_computes_p50_and_p95_of_the_first_good_attempts(gen, settings):
    settings.PRODMON_SCOUT_JOBS = 20
    scouts(gen, 25)  # the last 5 are not scouts
    s = stage_resource_suggestion(gen.pk)
    assert s.scouts == 20
    assert s.enough
    # Values 100..2000 (x100 s): p50 = 1050, p95 = 1905 (linear interpolation).
    assert s.wall.p50 == pytest.approx(1050.0)
    assert s.wall.p95 == pytest.approx(1905.0)
    assert s.rss.p95 == pytest.approx(1905 * MIB)
    assert s.disk.p50 == pytest.approx(10.5 * GIB)


def test_it_suggests_p95_times_the_margin_rounded_up(gen, settings):
    settings.PRODMON_SCOUT_JOBS = 20
    scouts(gen, 20)
    s = stage_resource_suggestion(gen.pk)
    # 1905 MiB x 1.2 = 2286 MiB -> 2304 (multiple of 128).
    assert s.memory_mb == 2304
    # 1905 s x 1.2 = 2286 s -> 2700 s (multiple of 15 min).
    assert s.walltime_s == 2700
    # 19.05 GiB x 1.2 = 22.86 GiB -> 23 GiB.
    assert s.disk_bytes == 23 * GIB
    assert scout_resource_suggestion(gen.pk) == {"memory_mb": 2304, "walltime_s": 2700}


def test_it_waits_for_enough_scouts(gen, settings):
    settings.PRODMON_SCOUT_MIN_JOBS = 5
    scouts(gen, 3)
    s = stage_resource_suggestion(gen.pk)
    assert s.scouts == 3
    assert not s.enough
    assert s.memory_mb is None
    assert s.walltime_s is None
    assert scout_resource_suggestion(gen.pk) is None


def test_it_recognises_memory_kills():
    assert memory_kill_reason(
        exit_code=137, signal=None, peak_rss_bytes=None, request_memory_mb=None
    )
    assert memory_kill_reason(
        exit_code=50660, signal=None, peak_rss_bytes=1, request_memory_mb=None
    )
    near = memory_kill_reason(
        exit_code=None, signal=9, peak_rss_bytes=1950 * MIB, request_memory_mb=2000
    )
    assert near
    assert "SIGKILL" in near
    far = memory_kill_reason(
        exit_code=None, signal=9, peak_rss_bytes=500 * MIB, request_memory_mb=2000
    )
    assert far is None
    assert (
        memory_kill_reason(exit_code=65, signal=None, peak_rss_bytes=None, request_memory_mb=2000)
        is None
    )


def test_it_lists_memory_kills_and_never_suggests_below_their_rss(client, member, gen, settings):
    settings.PRODMON_SCOUT_JOBS = 20
    scouts(gen, 20)
    gen.request_memory_mb = 2000
    gen.save()
    killed = JobFactory(stage=gen, key="oom", state=Job.State.FAILED)
    oom = AttemptFactory(
        job=killed,
        number=1,
        status=Attempt.Status.FAILED,
        signal=9,
        exit_code=None,
        peak_rss_bytes=2900 * MIB,
        request_memory_mb=3000,
    )
    AttemptFactory(
        job=JobFactory(stage=gen, key="wm", state=Job.State.FAILED),
        number=1,
        status=Attempt.Status.FAILED,
        exit_code=50660,
        peak_rss_bytes=1000 * MIB,
    )
    AttemptFactory(  # a SIGKILL far below the request: not memory
        job=JobFactory(stage=gen, key="other", state=Job.State.FAILED),
        number=1,
        status=Attempt.Status.FAILED,
        signal=9,
        peak_rss_bytes=200 * MIB,
    )
    s = stage_resource_suggestion(gen.pk)
    assert {k.job_key for k in s.memory_kills} == {"oom", "wm"}
    # 2900 MiB x 1.2 = 3480 -> 3584: the killed attempt's RSS is a floor.
    assert s.memory_mb == 3584
    client.force_login(member)
    html = client.get(reverse("progress-stage", args=[gen.pk])).content.decode()
    assert 'id="memory-kills"' in html
    assert "3,584 MB" in html
    assert str(oom.uid) in html
    data = client.get(reverse("api-stage-resources", args=[gen.pk])).json()
    assert data["suggested"]["memory_mb"] == 3584
    assert data["memory_kills"] == 2
