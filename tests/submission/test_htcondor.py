"""The HTCondor backend without a schedd: the job event log read with the
bindings' JobEventLog on HTCondor's own real logs (read in place from the
shared data folder), the hold reason plumbing, and the exact submit description.
Nothing here talks to a schedd; docs/actions.md says so."""

from pathlib import Path

import pytest
from django.utils import timezone

from prodmon.actions import services
from prodmon.models import Attempt, BatchEvent, Submission
from prodmon.submission.base import BatchRef, BatchState, JobSpec, SubmissionError
from prodmon.submission.htcondor import (
    HTCondorBackend,
    event_log_read,
    event_log_status,
    quote_args,
    quote_environment,
    submit_description,
)
from prodmon.submission.spec import attempt_workdir
from tests.factories import AttemptFactory, CampaignFactory, JobFactory, StageFactory

LOGS = Path(__file__).resolve().parents[3] / "shared" / "data" / "htcondor-eventlogs"
GT1957 = LOGS / "htcondor__condor_tests_job_dagman_gt1957.testlog"
NODE_A = LOGS / "htcondor__condor_tests_job_dagman_abnormal_term_recovery_retries-nodeA.dummy_log"
RECOVERY = LOGS / "htcondor__condor_tests_job_dagman_recovery_event_check.log.dummy"
TEST_CONDOR = LOGS / "htcondor__condor_utils_test_condor.log"


@pytest.fixture
def logs():
    if not LOGS.is_dir():
        pytest.skip(f"the real HTCondor event logs are not here ({LOGS}); CI has them")
    return LOGS


def test_it_reads_a_segfault_then_an_abort_from_a_real_log(logs):
    events = event_log_read(GT1957, cluster=180158)
    assert [e.kind for e in events] == ["submit", "execute", "job_terminated", "job_aborted"]
    terminated = events[2]
    assert (terminated.exit_code, terminated.signal, terminated.event_code) == (None, 11, 5)
    assert events[0].data["LogNotes"] == "DAG Node: A"
    status = event_log_status("180158.0", events)
    assert (status.state, status.raw_state, status.signal) == ("cancelled", "job_aborted", 11)


def test_it_reads_a_normal_exit_from_a_real_log(logs):
    events = event_log_read(GT1957, cluster=180159)
    assert [e.kind for e in events] == ["submit", "execute", "job_terminated"]
    status = event_log_status("180159.0", events)
    assert (status.state, status.exit_code, status.signal) == (BatchState.SUCCEEDED, 0, None)
    # seq is the position in the whole log, where two clusters interleave.
    assert [e.seq for e in events] == [3, 4, 6]


def test_it_reads_every_event_of_the_big_real_log(logs):
    events = event_log_read(TEST_CONDOR)
    assert len(events) == 851
    assert (events[0].kind, events[0].data["Cluster"]) == ("submit", 2758)
    held = [e for e in events if e.kind == "job_held"]
    assert len(held) == 48
    assert {(e.hold_reason_code, e.hold_reason_subcode) for e in held} == {(0, 0)}
    terminated = [e for e in events if e.kind == "job_terminated"]
    assert len(terminated) == 43
    assert sum(e.exit_code == 0 for e in terminated) == 2
    reconnect = [e.reason for e in events if e.kind == "job_reconnect_failed"]
    assert reconnect == [
        "Job disconnected too long: JobLeaseDuration (50 seconds) expired",
        "Startd is no longer at old port, job must have been killed",
    ]


def test_it_reads_the_other_real_logs(logs):
    node_a = event_log_read(NODE_A)
    assert [(e.kind, e.signal) for e in node_a if e.kind == "job_terminated"] == [
        ("job_terminated", 11)
    ]
    recovery = event_log_read(RECOVERY)
    assert [e.exit_code for e in recovery if e.kind == "job_terminated"] == [0, 0]
    assert recovery[-1].kind == "post_script_terminated"


def test_it_reads_a_hold_reason_code_and_subcode(tmp_path):
    # Written here in HTCondor's event-log format: the real sample logs only hold with code 0.
    log = tmp_path / "condor.log"
    log.write_text(
        "000 (4242.000.000) 2025-03-01 10:00:00 Job submitted from host: <10.0.0.1:9618>\n...\n"
        "001 (4242.000.000) 2025-03-01 10:01:00 Job executing on host: <10.0.0.2:9618>\n...\n"
        "012 (4242.000.000) 2025-03-01 10:30:00 Job was held.\n"
        "\tJob has gone over cgroup memory limit of 2000 megabytes.\n"
        "\tCode 34 Subcode 0\n...\n"
    )
    events = event_log_read(log)
    status = event_log_status("4242.0", events)
    assert (status.state, status.hold_reason_code, status.hold_reason_subcode) == ("held", 34, 0)
    assert status.reason == "Job has gone over cgroup memory limit of 2000 megabytes."


@pytest.mark.django_db
def test_it_polls_an_attempt_from_its_event_log_without_a_schedd(logs, settings, tmp_path):
    settings.PRODMON_SUBMISSION_DIR = tmp_path / "submission"
    settings.PRODMON_BATCH_END_GRACE_SECONDS = 600
    stage = StageFactory(campaign=CampaignFactory(name="mc"), name="gen")
    job = JobFactory(stage=stage, key="a.root", state="queued", attempt_count=1)
    submission = Submission.objects.create(stage=stage, kind="initial", backend="htcondor")
    attempt = AttemptFactory(
        job=job,
        number=1,
        status="queued",
        node=None,
        started_at=None,
        submission=submission,
        batch_id="180158.0",
        created_at=timezone.now(),
    )
    workdir = attempt_workdir(attempt.uid)
    workdir.mkdir(parents=True)
    (workdir / "condor.log").symlink_to(GT1957)  # read in place

    assert services.submission_poll() == 1
    attempt.refresh_from_db()
    assert attempt.status == Attempt.Status.FAILED
    assert (attempt.exit_code, attempt.signal, attempt.batch_state) == (None, 11, "job_aborted")
    kinds = list(BatchEvent.objects.filter(attempt=attempt).values_list("seq", "kind"))
    assert kinds == [(0, "submit"), (1, "execute"), (2, "job_terminated"), (5, "job_aborted")]
    assert BatchEvent.objects.get(attempt=attempt, kind="job_terminated").signal == 11


def test_it_quotes_arguments_and_environment_the_htcondor_way():
    assert quote_args(["a b", "it's", 'say "hi"']) == "\"'a b' 'it''s' 'say \"\"hi\"\"'\""
    assert quote_environment({"B": "x y", "A": "1"}) == "\"A='1' B='x y'\""


def test_it_builds_the_exact_submit_description(settings, tmp_path):
    settings.PRODMON_HTCONDOR_PYTHON = "/usr/bin/python3"
    settings.PRODMON_SUBMISSION_REPORTER = "/srv/prodmon/logserver/prodmon_report.py"
    spec = JobSpec(
        attempt_uid="5a1c7e0e-0d1b-4c8e-9d4e-3f1a2b3c4d5e",
        name="pm.mc2025a.gen.gen_00042.root",
        command="lar -c gen.fcl -s 'in put.root'",
        environment={
            "PRODMON_URL": "https://prodmon.example.org",
            "PRODMON_TOKEN_FILE": "/srv/prodmon/var/submission/tokens/dune.token",
            "PRODMON_JOB": "gen_00042.root",
            "GEN_SEED": "42",
        },
        workdir=Path("/srv/prodmon/var/submission/attempts/5a/5a1c7e0e"),
        token_file=Path("/srv/prodmon/var/submission/tokens/dune.token"),
        cores=2,
        memory_mb=3000,
        walltime_s=7200,
        exclude_nodes=("wn07.example.org", "wn03.example.org"),
    )
    assert submit_description(spec) == {
        "universe": "vanilla",
        "batch_name": "pm.mc2025a.gen.gen_00042.root",
        "executable": "/usr/bin/python3",
        "transfer_executable": "false",
        "arguments": (
            "\"'prodmon_report.py' '--' '/bin/sh' '-c' 'lar -c gen.fcl -s ''in put.root'''\""
        ),
        "environment": (
            "\"GEN_SEED='42' PRODMON_JOB='gen_00042.root' PRODMON_TOKEN_FILE='dune.token' "
            "PRODMON_URL='https://prodmon.example.org'\""
        ),
        "getenv": "false",
        "initialdir": "/srv/prodmon/var/submission/attempts/5a/5a1c7e0e",
        "should_transfer_files": "YES",
        "when_to_transfer_output": "ON_EXIT_OR_EVICT",
        "transfer_input_files": (
            "/srv/prodmon/logserver/prodmon_report.py,/srv/prodmon/var/submission/tokens/dune.token"
        ),
        "output": "job.out",
        "error": "job.err",
        "log": "condor.log",
        "request_cpus": "2",
        "request_memory": "3000MB",
        "allowed_execute_duration": "7200",
        "requirements": (
            '(TARGET.Machine =!= "wn03.example.org") && (TARGET.Machine =!= "wn07.example.org")'
        ),
        "+ProdmonAttempt": '"5a1c7e0e-0d1b-4c8e-9d4e-3f1a2b3c4d5e"',
    }


def test_it_makes_a_submit_object_the_bindings_accept(tmp_path):
    from prodmon.submission.htcondor import bindings

    spec = JobSpec(
        attempt_uid="u",
        name="n",
        command="echo hi",
        environment={"PRODMON_URL": "http://x"},
        workdir=tmp_path,
        token_file=tmp_path / "t.token",
    )
    text = str(bindings().Submit(submit_description(spec)))
    assert "arguments = \"'prodmon_report.py' '--' '/bin/sh' '-c' 'echo hi'\"" in text
    assert text.rstrip().endswith("queue")


def test_it_returns_no_status_for_a_job_it_cannot_see(tmp_path, monkeypatch):
    def no_schedd():
        raise SubmissionError("cannot reach the schedd")

    backend = HTCondorBackend()
    monkeypatch.setattr(backend, "_schedd", no_schedd)
    assert backend.status([BatchRef("77.0", tmp_path)]) == {}
