"""The Slurm backend on a real one-node cluster (.ci/slurm-setup.sh): sbatch a
reporter-wrapped payload that reports to the live server, with its environment
carried by --export; squeue/scontrol for its state; scancel; the exclusion list."""

import shutil
import subprocess
import uuid

import pytest

from logserver.selectors import log_tail
from prodmon.actions import services
from prodmon.models import Attempt
from prodmon.submission.base import BatchRef, BatchState
from prodmon.submission.slurm import SlurmBackend, parse_scontrol, status_from_fields
from prodmon.submission.spec import attempt_workdir
from tests.conftest import service_missing
from tests.factories import JobFactory
from tests.submission.conftest import reporter_done, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services]
# A server address nothing listens on, for jobs whose reports a test does not want.
NOWHERE = "http://127.0.0.1:9"


@pytest.fixture
def slurm():
    if shutil.which("sinfo") is None:
        service_missing("needs a Slurm cluster: run .ci/slurm-setup.sh (as root)")
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        service_missing(
            f"Slurm does not answer (sinfo: {proc.stderr.strip()}); run .ci/slurm-setup.sh"
        )
    return SlurmBackend()


def retry(job, actor):
    action, _ = services.job_retry_request(job=job, actor=actor, idempotency_key=uuid.uuid4().hex)
    assert action.done == 1, action.messages
    return job.attempts.order_by("-number").first()


def test_it_runs_a_job_on_slurm_that_reports_to_the_server(slurm, submit_to, make_stage, shifter):
    submit_to("slurm")
    stage = make_stage('echo "slurm job $SLURM_JOB_ID for $PRODMON_JOB seed=$GEN_SEED"; exit 7')
    job = JobFactory(stage=stage, key="gen_00042.root", state="failed")
    attempt = retry(job, shifter)
    assert attempt.batch_id.isdigit()
    submission = attempt.submission
    assert submission.command.startswith(
        "sbatch --parsable --job-name=pm.mc2025a.gen.gen_00042.root"
    )
    assert "--mem=2000M" in submission.command
    assert "--export=" in submission.command
    assert "PRODMON_ATTEMPT" in submission.command

    # Wait on the job's log, not the database (see local_slots_held).
    reporter_done(attempt_workdir(attempt.uid) / "job.log")
    attempt.refresh_from_db()
    assert attempt.status == Attempt.Status.FAILED
    assert attempt.exit_code == 7
    # The reporter took the batch id from $SLURM_JOB_ID.
    assert attempt.batch_id == submission.external_id
    text = "".join(s.text for s in log_tail(attempt=attempt) if not s.is_gap)
    assert f"slurm job {attempt.batch_id} for gen_00042.root seed=42,7 x" in text

    def final_state():
        status = slurm.status([BatchRef(attempt.batch_id, attempt_workdir(attempt.uid))])
        st = status.get(attempt.batch_id)
        return st if st and st.state in BatchState.ENDED else None

    status = wait_for(final_state, timeout=30, what="scontrol to show the end")
    assert (status.state, status.raw_state, status.exit_code) == ("failed", "FAILED", 7)


def test_it_asks_for_the_requested_memory_and_time(slurm, submit_to, make_stage, shifter, tmp_path):
    submit_to("slurm", PRODMON_SUBMISSION_URL=NOWHERE)
    stage = make_stage("sleep 30", request_memory_mb=300, request_walltime_s=150)
    job = JobFactory(stage=stage, key="res.root", state="failed")
    attempt = retry(job, shifter)
    try:
        out = subprocess.run(
            ["scontrol", "show", "job", "-o", attempt.batch_id], capture_output=True, text=True
        ).stdout
        fields = parse_scontrol(out)
        assert fields["TimeLimit"] == "00:03:00"
        assert fields["MinMemoryNode"] == "300M"
        assert fields["WorkDir"] == str(attempt_workdir(attempt.uid))
    finally:
        slurm.cancel(BatchRef(attempt.batch_id, attempt_workdir(attempt.uid)))


def test_it_cancels_a_slurm_job_and_the_poll_ends_the_attempt(
    slurm, submit_to, make_stage, shifter
):
    # The reporter cannot reach a server here: only the batch system can say it ended.
    submit_to("slurm", PRODMON_SUBMISSION_URL=NOWHERE)
    stage = make_stage("sleep 300")
    job = JobFactory(stage=stage, key="long.root", state="failed")
    attempt = retry(job, shifter)
    ref = BatchRef(attempt.batch_id, attempt_workdir(attempt.uid))
    wait_for(
        lambda: slurm.status([ref]).get(attempt.batch_id),
        timeout=30,
        what="squeue to know the job",
    )
    assert "scancel" in slurm.cancel(ref)
    wait_for(
        lambda: slurm.status([ref])[attempt.batch_id].state == BatchState.CANCELLED,
        timeout=30,
        what="the job to be cancelled",
    )

    assert services.submission_poll() == 1
    attempt.refresh_from_db()
    assert (attempt.status, attempt.batch_state) == (Attempt.Status.FAILED, "CANCELLED")
    assert attempt.batch_events.get().kind == "CANCELLED"


def test_it_applies_only_the_excluded_nodes_this_cluster_has(slurm):
    nodes = slurm.cluster_nodes()
    assert nodes
    here = nodes[0]
    assert slurm.excluded([f"{here}.example.org", "wn-elsewhere.cern.ch"]) == [here]
    assert slurm.excluded(["wn-elsewhere.cern.ch"]) == []


def test_it_reads_slurm_states():
    st = status_from_fields("12", "PENDING", "JobHeldUser")
    assert st.state == BatchState.HELD
    st = status_from_fields("12", "OUT_OF_MEMORY", "OutOfMemory", "0:125")
    assert (st.state, st.exit_code, st.signal, st.reason) == ("failed", 0, 125, "OutOfMemory")
    st = status_from_fields("12", "TIMEOUT", "TimeLimit", "0:15")
    assert (st.state, st.signal) == ("failed", 15)
    assert status_from_fields("12", "COMPLETED", "None", "0:0").state == "succeeded"
    assert status_from_fields("12", "SOMETHING_NEW", "").state == "unknown"
