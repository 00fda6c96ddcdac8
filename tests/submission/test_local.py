"""The local backend with real processes: a reporter-wrapped payload, started
detached, reports its run to the live server; the concurrency limit holds; a
cancel reaches the payload.

While jobs talk to the live server the tests wait on files (the runner's exit
file, the job's log), never on the database: see local_slots_held."""

import os
import socket
import uuid

import pytest
from django.utils import timezone

from logserver.selectors import log_tail
from prodmon.actions import services
from prodmon.models import Attempt, Job
from prodmon.submission.base import BatchRef, BatchState
from prodmon.submission.config import submission_dir
from prodmon.submission.local import LocalBackend
from prodmon.submission.spec import attempt_workdir
from tests.factories import JobFactory
from tests.submission.conftest import local_slots_held, runner_exited, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def retry(job, actor):
    action, _ = services.job_retry_request(job=job, actor=actor, idempotency_key=uuid.uuid4().hex)
    assert action.done == 1, action.messages
    return job.attempts.order_by("-number").first()


def test_it_runs_a_reporter_wrapped_payload_that_reports_to_the_server(
    submit_to, make_stage, shifter
):
    submit_to("local", PRODMON_LOCAL_MAX_JOBS=1)
    stage = make_stage(
        'echo "payload for $PRODMON_JOB seed=$GEN_SEED"; echo data > out.root; exit 3'
    )
    job = JobFactory(
        stage=stage, key="gen_00001.root", state="failed", expected_outputs=["out.root"]
    )
    with local_slots_held(submission_dir(), 1):
        started = timezone.now()
        attempt = retry(job, shifter)
        # The request came back at once: the job runs detached and reports by itself.
        assert (timezone.now() - started).total_seconds() < 10
        assert attempt.batch_id.startswith(f"local:{socket.gethostname()}:")
        ref = BatchRef(attempt.batch_id, attempt_workdir(attempt.uid))
        status = LocalBackend().status([ref])[attempt.batch_id]
        assert (status.state, status.raw_state) == (BatchState.QUEUED, "waiting for a slot")

    runner_exited(submission_dir(), attempt.uid)
    attempt.refresh_from_db()
    assert attempt.status == Attempt.Status.FAILED
    assert attempt.exit_code == 3
    assert attempt.node is not None
    assert attempt.started_at is not None
    text = "".join(seg.text for seg in log_tail(attempt=attempt) if not seg.is_gap)
    assert "payload for gen_00001.root seed=42,7 x" in text
    assert list(attempt.outputs.values_list("name", flat=True)) == ["out.root"]
    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    status = LocalBackend().status([ref])[attempt.batch_id]
    assert (status.state, status.exit_code) == (BatchState.FAILED, 3)


def test_it_runs_no_more_local_jobs_at_once_than_the_limit(submit_to, make_stage, shifter):
    submit_to("local", PRODMON_LOCAL_MAX_JOBS=1)
    stage = make_stage("sleep 1; echo done")
    jobs = [JobFactory(stage=stage, key=f"in{i}.root", state="failed") for i in range(2)]
    # Both are submitted before either may run (and talk to the live server).
    with local_slots_held(submission_dir(), 1):
        attempts = [retry(job, shifter) for job in jobs]
    for a in attempts:
        runner_exited(submission_dir(), a.uid)
    for a in attempts:
        a.refresh_from_db()
    first, second = sorted(attempts, key=lambda a: a.started_at)
    assert first.status == second.status == Attempt.Status.SUCCEEDED
    # The second waited for the only slot: it started after the first had ended.
    assert second.started_at >= first.ended_at - timezone.timedelta(milliseconds=200)


def test_it_cancels_a_running_local_job(submit_to, make_stage, shifter):
    submit_to("local", PRODMON_LOCAL_MAX_JOBS=1)
    stage = make_stage("echo payload-started; sleep 120")
    job = JobFactory(stage=stage, key="long.root", state="failed")
    with local_slots_held(submission_dir(), 1):  # it runs once the request is over
        attempt = retry(job, shifter)
    workdir = attempt_workdir(attempt.uid)
    wait_for(
        lambda: "payload-started" in (workdir / "job.log").read_text(errors="replace"),
        timeout=60,
        what="the payload to start",
    )
    ref = BatchRef(attempt.batch_id, workdir)
    backend = LocalBackend()
    assert backend.status([ref])[attempt.batch_id].state == BatchState.RUNNING
    assert "sent SIGTERM" in backend.cancel(ref)
    runner_exited(submission_dir(), attempt.uid)
    attempt.refresh_from_db()
    assert attempt.status == Attempt.Status.FAILED
    assert attempt.signal == 15


def test_it_kills_a_job_over_its_memory_request_and_reports_it(submit_to, make_stage, shifter):
    submit_to("local", PRODMON_LOCAL_MAX_JOBS=1)
    stage = make_stage(
        "echo allocating; python3 -c 'import time; b = b\"x\" * (300 << 20); time.sleep(60)'",
        request_memory_mb=100,
    )
    job = JobFactory(stage=stage, key="hog.root", state="failed")
    with local_slots_held(submission_dir(), 1):  # it runs once the request is over
        attempt = retry(job, shifter)
    assert attempt.request_memory_mb == 100
    runner_exited(submission_dir(), attempt.uid, timeout=60)
    # The reporter saw its payload killed by SIGKILL and said so to the server.
    attempt.refresh_from_db()
    assert (attempt.status, attempt.signal) == (Attempt.Status.FAILED, 9)
    ref = BatchRef(attempt.batch_id, attempt_workdir(attempt.uid))
    status = LocalBackend().status([ref])[attempt.batch_id]
    assert (status.state, status.raw_state, status.signal) == (
        BatchState.FAILED,
        "OUT_OF_MEMORY",
        9,
    )
    assert "of the 100 MB requested" in status.reason
    text = (attempt_workdir(attempt.uid) / "job.log").read_text()
    assert "local-runner: memory limit exceeded" in text


def test_it_stops_a_job_over_its_wall_time_and_reports_it(submit_to, make_stage, shifter):
    submit_to("local", PRODMON_LOCAL_MAX_JOBS=1)
    stage = make_stage("echo started; sleep 60; echo finished", request_walltime_s=2)
    job = JobFactory(stage=stage, key="slow.root", state="failed")
    with local_slots_held(submission_dir(), 1):  # it runs once the request is over
        attempt = retry(job, shifter)
    runner_exited(submission_dir(), attempt.uid, timeout=40)
    attempt.refresh_from_db()
    assert (attempt.status, attempt.signal) == (Attempt.Status.FAILED, 15)
    ref = BatchRef(attempt.batch_id, attempt_workdir(attempt.uid))
    status = LocalBackend().status([ref])[attempt.batch_id]
    assert (status.state, status.raw_state) == (BatchState.FAILED, "TIMEOUT")
    assert status.reason == "wall time limit exceeded: 2 s requested; killed"
    text = (attempt_workdir(attempt.uid) / "job.log").read_text()
    assert "started" in text
    assert "finished" not in text
    # Nothing of the job is left running: the runner ended its whole process
    # tree (the sleep ran in the attempt's directory).
    workdir = os.fsencode(attempt_workdir(attempt.uid))
    leftovers = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.fsencode(os.readlink(f"/proc/{pid}/cwd")) == workdir:
                leftovers.append(pid)
        except OSError:
            continue
    assert leftovers == []
