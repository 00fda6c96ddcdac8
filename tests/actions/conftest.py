import pytest

from prodmon.models import Role
from prodmon.submission import base
from tests.actions.fakes import FakeBackend
from tests.factories import CampaignFactory, MembershipFactory, UserFactory


@pytest.fixture(autouse=True)
def action_settings(settings, tmp_path, monkeypatch):
    """Actions run inline (eager Celery), submit to the recording backend, and
    keep their files under tmp_path. Launches wait no back-out unless a test says so."""
    settings.PRODMON_SUBMISSION_DIR = tmp_path / "submission"
    settings.PRODMON_ACTIONS_RUNNER = "celery"
    settings.PRODMON_LAUNCH_BACKOUT_SECONDS = 0
    settings.PRODMON_SUBMISSION_BACKEND = "fake"
    monkeypatch.setitem(base.BACKENDS, "fake", "tests.actions.fakes.FakeBackend")
    FakeBackend.reset()
    yield settings
    FakeBackend.reset()


@pytest.fixture
def fake_backend():
    return FakeBackend


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


@pytest.fixture
def stage(campaign):
    from prodmon import services

    return services.stage_create(
        campaign=campaign,
        name="gen",
        expected_jobs=10,
        command="echo generating $PRODMON_JOB",
        environment={"GEN_SEED": "42"},
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


@pytest.fixture
def hooks(monkeypatch):
    """hooks(module, name=function, ...) installs functions another app would
    provide (triage.selectors, prodmon.progress.selectors) for one test."""
    import sys
    import types

    def install(module: str, **functions):
        mod = types.ModuleType(module)
        for name, fn in functions.items():
            setattr(mod, name, fn)
        monkeypatch.setitem(sys.modules, module, mod)
        return mod

    return install
