"""The action layer's tests run on our own parts: the real local submission
backend (reporter-wrapped subprocesses, kept short: echo, true, sleep) and
triage's real selectors, fed real triage state (classified failures, liveness
verdicts, node flags) made through triage's services or ingested events.

The jobs report to an address where nothing listens (no live server in most of
these tests): the reporter runs the payload all the same, spools its events
under tmp_path and exits at once (drain timeout 0). Tests look at what really
happened: the runner's exit file, the job's log, the files the payload wrote."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from prodmon.models import Role
from prodmon.submission.spec import attempt_workdir
from tests.factories import CampaignFactory, MembershipFactory, UserFactory

NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing answers


@pytest.fixture(autouse=True)
def action_settings(settings, tmp_path):
    """Actions run inline (eager Celery) and submit to the real local backend,
    with every file under tmp_path. Launches wait no back-out unless a test
    says so. Afterwards every runner these tests started is stopped."""
    settings.PRODMON_SUBMISSION_DIR = tmp_path / "submission"
    settings.PRODMON_ACTIONS_RUNNER = "celery"
    settings.PRODMON_LAUNCH_BACKOUT_SECONDS = 0
    settings.PRODMON_SUBMISSION_BACKEND = "local"
    settings.PRODMON_SUBMISSION_URL = NOWHERE
    settings.PRODMON_LOCAL_MAX_JOBS = 4
    yield settings
    runners_stop(tmp_path / "submission")


def runner_pids(submission_dir: Path) -> list[int]:
    """The local runners (and their children) started under this submission
    directory: their command lines name it."""
    needle = str(submission_dir).encode()
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                if needle in fh.read():
                    pids.append(int(name))
        except OSError:
            continue
    return pids


def runners_stop(submission_dir: Path, *, grace_s: float = 15) -> None:
    """Let short jobs finish, then kill (by process group) whatever this test's
    runners still run, e.g. a `sleep` a test left behind."""
    deadline = time.monotonic() + grace_s
    while runner_pids(submission_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in runner_pids(submission_dir):
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def run_result(attempt, *, timeout: float = 60) -> tuple[dict, str]:
    """Wait (on files only) until the attempt's local runner has exited; return
    its exit file and the job's log."""
    workdir = attempt_workdir(attempt.uid)
    deadline = time.monotonic() + timeout
    while not (workdir / "exit.json").exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"the runner of attempt {attempt.uid} did not finish")
        time.sleep(0.05)
    log = (workdir / "job.log").read_text(errors="replace")
    return json.loads((workdir / "exit.json").read_text()), log


def wait_for(predicate, *, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def runs_started(submission_dir: Path) -> list[Path]:
    """Attempt directories where a local runner really started."""
    return sorted(p.parent for p in (submission_dir / "attempts").glob("*/*/job.log"))


@pytest.fixture
def campaign(experiment):
    return CampaignFactory(experiment=experiment, name="mc2025a")


def _member(username, experiment, role):
    return MembershipFactory(
        user=UserFactory(username=username), experiment=experiment, role=role
    ).user


@pytest.fixture
def viewer(experiment):
    return _member("vera.viewer", experiment, Role.VIEWER)


@pytest.fixture
def shifter(experiment):
    return _member("sam.shifter", experiment, Role.SHIFTER)


@pytest.fixture
def manager(experiment):
    return _member("paula.manager", experiment, Role.MANAGER)


@pytest.fixture
def outsider(other_experiment):
    return _member("mallory", other_experiment, Role.MANAGER)


def job_environment(tmp_path) -> dict:
    """What every test stage's jobs get on top of the reporter's identity."""
    return {
        "GEN_SEED": "42",
        "PRODMON_SPOOL_DIR": str(tmp_path / "spool"),
        "PRODMON_DRAIN_TIMEOUT": "0",
        "PRODMON_HTTP_TIMEOUT": "1",
    }


@pytest.fixture
def stage(campaign, tmp_path):
    from prodmon import services

    return services.stage_create(
        campaign=campaign,
        name="gen",
        expected_jobs=10,
        command='echo "generating $PRODMON_JOB seed=$GEN_SEED"',
        environment=job_environment(tmp_path),
    )


def failed_job(stage, key="gen_00001.root", *, attempts=1, exit_code=65, **job_fields):
    """A job whose `attempts` attempts all failed, as ingest would have left it."""
    from django.utils import timezone

    from prodmon.models import Attempt, Job
    from tests.factories import AttemptFactory, JobFactory

    job = JobFactory(
        stage=stage, key=key, state=Job.State.FAILED, attempt_count=attempts, **job_fields
    )
    for n in range(1, attempts + 1):
        AttemptFactory(
            job=job,
            number=n,
            status=Attempt.Status.FAILED,
            exit_code=exit_code,
            ended_at=timezone.now(),
        )
    return job


def classify(job, *, transient: bool, actor, title: str = ""):
    """Classify the job's latest failed attempt with triage's own classifier,
    then mark its class transient or permanent as a shifter would (triage's
    error_class_update). Returns the error class."""
    from triage import services as triage_services

    attempt = job.attempts.order_by("-number").first()
    verdict = triage_services.attempt_classify(attempt_id=attempt.pk)
    assert verdict is not None, "triage did not classify the failure"
    error_class = verdict.error_class
    triage_services.error_class_update(
        error_class=error_class,
        actor=actor,
        transient=transient,
        **({"title": title} if title else {}),
    )
    error_class.refresh_from_db()
    return error_class


def node_flag_black_hole(*, experiment, hostname: str, actor):
    """Flag a node as a black hole through triage's services: an attempt of the
    experiment ended on it (so node health has a row), then a shifter flags it."""
    from django.utils import timezone

    from prodmon.models import Attempt, Node
    from tests.factories import AttemptFactory, JobFactory, StageFactory
    from triage import services as triage_services

    node, _ = Node.objects.get_or_create(hostname=hostname, defaults={"site": "LOCAL"})
    stage = StageFactory(campaign=CampaignFactory(experiment=experiment), name="probe")
    job = JobFactory(stage=stage, key=f"probe-{hostname}", state="failed", attempt_count=1)
    attempt = AttemptFactory(
        job=job,
        number=1,
        status=Attempt.Status.FAILED,
        exit_code=1,
        node=node,
        ended_at=timezone.now(),
    )
    health = triage_services.node_health_update(attempt_id=attempt.pk)
    return triage_services.node_health_set(
        health_id=health.pk, flag=True, actor=actor, note="eats every job"
    )


def payload_output(attempt, *, timeout: float = 60) -> str:
    """What the payload itself printed: the job's log without the reporter's
    and the runner's own lines."""
    _, log = run_result(attempt, timeout=timeout)
    return "\n".join(
        line
        for line in log.splitlines()
        if not line.startswith(("prodmon-report:", "local-runner:"))
    ).strip()
