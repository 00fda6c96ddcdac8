"""Fixtures of the progress tests: the three personas (manager, member,
outsider), a campaign with dependent stages, and timelines of attempts built
straight into the database (bulk, with chosen times)."""

import datetime as dt
import uuid

import pytest
from django.core.cache import cache
from django.utils import timezone

from prodmon import services
from prodmon.models import Attempt, Job, Node, OutputFile, Role
from tests.factories import CampaignFactory, MembershipFactory, UserFactory

NOW = dt.datetime(2025, 3, 12, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def _fresh_cache():
    # Estimates and throttles live in the cache; tests must not see each other's.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def manager(experiment):
    user = UserFactory(username="pm.paula", email="paula@example.org")
    MembershipFactory(user=user, experiment=experiment, role=Role.MANAGER)
    return user


@pytest.fixture
def member(experiment):
    user = UserFactory(username="shifter.sam", email="sam@example.org")
    MembershipFactory(user=user, experiment=experiment, role=Role.SHIFTER)
    return user


@pytest.fixture
def outsider(other_experiment):
    user = UserFactory(username="mallory", email="mallory@example.org")
    MembershipFactory(user=user, experiment=other_experiment, role=Role.MANAGER)
    return user


@pytest.fixture
def campaign(experiment):
    return CampaignFactory(experiment=experiment, name="mc2025a")


@pytest.fixture
def gen(campaign):
    return services.stage_create(
        campaign=campaign, name="gen", order=1, job_type="generation", expected_jobs=100
    )


@pytest.fixture
def reco(campaign, gen):
    return services.stage_create(
        campaign=campaign,
        name="reco",
        order=2,
        job_type="reconstruction",
        expected_jobs=100,
        depends_on=[gen],
    )


def node(site: str = "FNAL", n: int = 1) -> Node:
    found, _ = Node.objects.get_or_create(
        hostname=f"wn{n:03d}.{site.lower()}.example.org", defaults={"site": site}
    )
    return found


def timeline(
    stage,
    *,
    done: int,
    running: int = 0,
    queued: int = 0,
    rate_per_hour: float = 10.0,
    wall_h: float = 1.0,
    fail_every: int = 0,
    now: dt.datetime = NOW,
    site: str = "FNAL",
    prefix: str = "",
    **attempt_fields,
) -> list[Job]:
    """Jobs of `stage` processed at a steady rate up to `now`.

    `done` jobs succeeded, one every 1/rate hours, each attempt lasting wall_h;
    with fail_every=k, every k-th attempt failed first and its job succeeded on
    a second attempt (both in the steady stream). `running` jobs have an
    attempt started at evenly spread times within the last wall_h; `queued`
    jobs have none yet.
    """
    wall = dt.timedelta(hours=wall_h)
    step = dt.timedelta(hours=1 / rate_per_hour)
    where = node(site)
    prefix = prefix or stage.name
    jobs, attempts = [], []
    retried = {i for i in range(1, done) if fail_every and i % fail_every == 0}
    n_attempts = done + len(retried)
    end_times = [now - step * (n_attempts - i) for i in range(n_attempts)]
    ends = iter(end_times)
    for i in range(done):
        job = Job(stage=stage, key=f"{prefix}_{i:05d}", state=Job.State.SUCCEEDED)
        plan = ["failed", "succeeded"] if i in retried else ["succeeded"]
        job.plan = [(status, next(ends)) for status in plan]
        jobs.append(job)
    for i in range(running):
        job = Job(stage=stage, key=f"{prefix}_r{i:05d}", state=Job.State.RUNNING)
        started = now - wall * ((i + 0.5) / max(running, 1))
        job.plan = [("running", started)]
        jobs.append(job)
    for i in range(queued):
        job = Job(stage=stage, key=f"{prefix}_q{i:05d}", state=Job.State.QUEUED)
        job.plan = []
        jobs.append(job)
    plans = [j.plan for j in jobs]
    Job.objects.bulk_create(jobs)
    for job, plan in zip(jobs, plans, strict=True):
        for number, (status, at) in enumerate(plan, start=1):
            if status == "running":
                started, ended = at, None
            else:
                started, ended = at - wall, at
            fields = {
                "uid": uuid.uuid4(),
                "job": job,
                "number": number,
                "node": where,
                "status": status,
                "created_at": started,
                "started_at": started,
                "ended_at": ended,
                "last_heartbeat_at": ended or now,
                "wall_s": wall.total_seconds() if ended else None,
                "exit_code": None if ended is None else (0 if status == "succeeded" else 65),
            }
            fields.update(attempt_fields)
            attempts.append(Attempt(**fields))
        job.attempt_count = len(plan)
    Attempt.objects.bulk_create(attempts)
    by_job = {}
    for a in attempts:
        by_job[a.job_id] = a
    for job in jobs:
        last = by_job.get(job.pk)
        if job.state == Job.State.SUCCEEDED and last is not None:
            job.good_attempt = last
    Job.objects.bulk_update(jobs, ["good_attempt", "attempt_count"])
    return jobs


def output(attempt: Attempt, name: str, parents: list[str], size: int = 1000) -> OutputFile:
    job = attempt.job
    return OutputFile.objects.create(
        attempt=attempt,
        job=job,
        stage=job.stage,
        campaign=job.stage.campaign,
        name=name,
        size=size,
        parents=parents,
        created_at=attempt.ended_at or timezone.now(),
    )
