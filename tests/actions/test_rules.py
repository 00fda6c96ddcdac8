"""The retry rules as pure functions: refusal order and resource increases."""

import pytest

from prodmon.actions import rules
from prodmon.models import Attempt, Job, Stage


def job(**fields):
    return Job(pk=1, attempt_count=fields.pop("attempt_count", 1), max_attempts=3, **fields)


def refusal(
    j=None, *, stage_state="active", open_attempts=(), liveness=None, cls=None, force=False
):
    return rules.retry_refusal(
        job=j or job(),
        stage_state=stage_state,
        open_attempts=list(open_attempts),
        liveness=liveness or {},
        failure_class=cls,
        force=force,
    )


def test_it_allows_a_plain_failed_job():
    assert refusal() is None


def test_it_names_the_first_reason_in_order():
    open_one = Attempt(pk=7, number=2, status="running")
    r = refusal(job(attempt_count=3), stage_state="held", open_attempts=[open_one])
    assert (r.code, r.message) == ("stage_closed", "the stage is held")
    r = refusal(job(attempt_count=3), open_attempts=[open_one])
    assert (r.code, r.message) == ("open_attempt", "attempt #2 is still running")
    assert refusal(job(attempt_count=3)).code == "max_attempts"


def test_it_lets_a_lost_attempt_through():
    lost = Attempt(pk=7, number=2, status="running")
    assert refusal(open_attempts=[lost], liveness={7: "lost"}) is None
    assert refusal(open_attempts=[lost], liveness={7: "ok"}).code == "open_attempt"


def test_it_lets_force_override_a_permanent_class_but_not_max_attempts():
    permanent = {"name": "bad-config", "transient": False}
    assert refusal(cls=permanent).code == "permanent"
    assert refusal(cls=permanent, force=True) is None
    assert refusal(job(attempt_count=3), cls=permanent, force=True).code == "max_attempts"
    assert refusal(cls={"name": "xrootd", "transient": True}) is None


@pytest.mark.parametrize(
    ("last_mem", "peak_mb", "expected"),
    [(2000, 0, 3000), (2000, 3000, 3600), (12000, 0, 16000), (20000, 0, 20000)],
)
def test_it_raises_memory_by_the_factor_or_the_peak_within_the_cap(last_mem, peak_mb, expected):
    stage = Stage(request_memory_mb=2000, request_walltime_s=3600)
    last = Attempt(
        request_memory_mb=last_mem, request_walltime_s=3600, peak_rss_bytes=peak_mb * 2**20
    )
    res = rules.resources_for_retry(stage=stage, last_attempt=last, more=True)
    assert res.memory_mb == expected  # never lower than before, even above the cap
    assert res.walltime_s == 5400


def test_it_starts_from_the_stage_defaults():
    stage = Stage(request_memory_mb=1500, request_walltime_s=600)
    same = rules.resources_for_retry(stage=stage, last_attempt=None, more=False)
    assert (same.memory_mb, same.walltime_s, same.basis) == (1500, 600, "same as the last attempt")
    more = rules.resources_for_retry(stage=stage, last_attempt=None, more=True)
    assert (more.memory_mb, more.walltime_s) == (2250, 900)


def test_it_prefers_a_scout_suggestion():
    stage = Stage(request_memory_mb=2000, request_walltime_s=3600)
    res = rules.resources_for_retry(
        stage=stage, last_attempt=None, more=True, suggestion={"memory_mb": 2600}
    )
    assert (res.memory_mb, res.walltime_s, res.basis) == (2600, 3600, "scout suggestion")
