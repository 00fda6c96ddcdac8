import contextlib
import fcntl
import time

import pytest

from prodmon import services
from prodmon.models import Role
from tests.factories import CampaignFactory, MembershipFactory, UserFactory


@pytest.fixture
def submit_to(settings, tmp_path, live_server):
    """submit_to("local") points the submission layer at a backend and at the
    live server, with its files under tmp_path; returns the live server.

    At the end it waits until every local runner it started has exited, so no
    reporter is still talking to the live server while the database is reset."""

    def configure(backend: str, **extra):
        settings.PRODMON_SUBMISSION_BACKEND = backend
        settings.PRODMON_SUBMISSION_DIR = tmp_path / "submission"
        settings.PRODMON_SUBMISSION_URL = live_server.url
        settings.PRODMON_ACTIONS_RUNNER = "celery"
        settings.PRODMON_LAUNCH_BACKOUT_SECONDS = 0
        for name, value in extra.items():
            setattr(settings, name, value)
        return live_server

    yield configure
    local_runners_wait(tmp_path / "submission")


def local_runners_wait(submission_dir, timeout: float = 90) -> None:
    """Wait until every local runner under this submission directory has exited."""
    for workdir in (submission_dir / "attempts").glob("*/*"):
        if (workdir / "job.log").exists() and not (workdir / "job.sh").exists():
            wait_for(
                (workdir / "exit.json").exists, timeout=timeout, what=f"the runner in {workdir}"
            )


@pytest.fixture
def shifter(experiment):
    return MembershipFactory(
        user=UserFactory(username="sam.shifter"), experiment=experiment, role=Role.SHIFTER
    ).user


@pytest.fixture
def make_stage(experiment, tmp_path):
    campaign = CampaignFactory(experiment=experiment, name="mc2025a")

    def make(command: str, name: str = "gen", environment: dict | None = None, **fields):
        stage = services.stage_create(
            campaign=campaign,
            name=name,
            command=command,
            # A report that cannot be delivered is spooled here, not in ~/.prodmon-spool.
            environment={
                "GEN_SEED": "42,7 x",
                "PRODMON_SPOOL_DIR": str(tmp_path / "spool"),
                **(environment or {}),
            },
        )
        for key, value in fields.items():
            setattr(stage, key, value)
        if fields:
            stage.save(update_fields=list(fields))
        return stage

    return make


def wait_for(predicate, *, timeout: float = 60, interval: float = 0.25, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@contextlib.contextmanager
def local_slots_held(submission_dir, slots: int):
    """Take every local slot, so local jobs wait (queued) until the block ends.

    Real jobs report to the live server, and with SQLite's in-memory test
    database the server's threads and the test share one connection: tests let
    jobs run only while they wait on files, not on the database."""
    directory = submission_dir / "local-slots"
    directory.mkdir(parents=True, exist_ok=True)
    handles = []
    try:
        for i in range(slots):
            fh = open(directory / f"slot-{i}.lock", "a+")
            fcntl.flock(fh, fcntl.LOCK_EX)
            handles.append(fh)
        yield
    finally:
        for fh in handles:
            fh.close()


def runner_exited(submission_dir, uid, *, timeout: float = 90) -> None:
    """Wait (on files only) until the local runner of this attempt has exited:
    the reporter has then delivered everything it had."""
    workdir = submission_dir / "attempts" / str(uid)[:2] / str(uid)
    wait_for((workdir / "exit.json").exists, timeout=timeout, what=f"the runner of {uid}")


def reporter_done(log_path, *, timeout: float = 120) -> None:
    """Wait (on files only) for the reporter's last line in a batch job's log."""

    def done():
        try:
            return "prodmon-report: done" in log_path.read_text(errors="replace")
        except OSError:
            return False

    wait_for(done, timeout=timeout, what=f"the reporter's summary in {log_path}")
