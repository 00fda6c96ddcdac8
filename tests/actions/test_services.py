"""The action layer's services on our own parts: retries and their rules,
idempotency, recovery, stage launches with their back-out delay, stage states,
the batch poll, and the database's own guard against a second open attempt.

Work goes to the real local backend (reporter-wrapped processes); triage's
real selectors answer about failure classes, liveness and black holes, fed
through triage's services. See tests/actions/conftest.py."""

import datetime as dt
import socket
import uuid

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from prodmon import services as production
from prodmon.actions import services
from prodmon.models import (
    Attempt,
    AuditEntry,
    BatchEvent,
    BulkAction,
    Job,
    OutputFile,
    Stage,
    Submission,
)
from prodmon.submission.config import submission_dir
from prodmon.submission.local import LocalBackend
from prodmon.submission.spec import attempt_workdir
from tests.actions.conftest import (
    classify,
    failed_job,
    job_environment,
    node_flag_black_hole,
    payload_output,
    run_result,
    runs_started,
    wait_for,
)
from tests.factories import AttemptFactory, JobFactory, StageFactory

pytestmark = pytest.mark.django_db


def key() -> str:
    return uuid.uuid4().hex


def retry(job, actor, **kwargs):
    return services.job_retry_request(job=job, actor=actor, idempotency_key=key(), **kwargs)


def make_stage(campaign, tmp_path, name, command, **fields):
    stage = production.stage_create(
        campaign=campaign,
        name=name,
        command=command,
        environment=job_environment(tmp_path),
        **fields,
    )
    return stage


def identity(job, attempt):
    return production.AttemptIdentity("mc2025a", job.stage.name, job.key, attempt.uid)


def cancel_run(attempt) -> None:
    """Stop a local job a test left running (the backend's own cancel)."""
    from prodmon.submission.base import BatchRef

    LocalBackend().cancel(BatchRef(attempt.batch_id, attempt_workdir(attempt.uid)))


# --- one retry ------------------------------------------------------------------


def test_it_retries_a_failed_job_as_a_reporter_wrapped_local_process(
    campaign, shifter, settings, tmp_path
):
    stage = make_stage(
        campaign, tmp_path, "gen", 'env | sort > payload.env; echo "generating $PRODMON_JOB"'
    )
    job = failed_job(stage, expected_outputs=["gen_00001_out.root"])
    action, created = retry(job, shifter)

    assert created
    assert action.state == BulkAction.State.DONE
    assert (action.total, action.done, action.failed, action.skipped) == (1, 1, 0, 0)
    new = job.attempts.get(number=2)
    assert new.status == Attempt.Status.QUEUED
    assert new.submission.kind == Submission.Kind.RETRY
    assert new.submission.state == Submission.State.SUBMITTED
    assert new.batch_id.startswith(f"local:{socket.gethostname()}:")
    job.refresh_from_db()
    assert job.state == Job.State.QUEUED
    assert job.attempt_count == 2

    # The process really ran, under the reporter, in the attempt's directory.
    exit_file, log = run_result(new)
    assert exit_file["exit_code"] == 0
    assert "generating gen_00001.root" in log
    env = dict(
        line.split("=", 1)
        for line in (attempt_workdir(new.uid) / "payload.env").read_text().splitlines()
        if "=" in line
    )
    assert env["PRODMON_URL"] == settings.PRODMON_SUBMISSION_URL
    assert env["PRODMON_CAMPAIGN"] == "mc2025a"
    assert env["PRODMON_STAGE"] == "gen"
    assert env["PRODMON_JOB"] == job.key
    assert env["PRODMON_ATTEMPT"] == str(new.uid)
    assert env["PRODMON_BATCH_ID"] == new.batch_id
    assert env["PRODMON_OUTPUTS"] == "gen_00001_out.root"
    assert env["GEN_SEED"] == "42"  # the stage's configured environment
    # Built, never inherited: the server's secrets stay out of the job.
    assert not {"DATABASE_URL", "DJANGO_SECRET_KEY", "SECRET_KEY"} & set(env)
    # The token travels as a file, readable by this account only, never inline.
    assert "PRODMON_TOKEN" not in env
    token_file = submission_dir() / "tokens" / f"{campaign.experiment.name}.token"
    assert env["PRODMON_TOKEN_FILE"] == str(token_file)
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    assert token_file.read_text().startswith("pm_")

    # What the submission layer ran is recorded: the runner with the attempt's limits.
    command = new.submission.command
    assert "local_runner.py" in command
    assert f"--memory-mb {stage.request_memory_mb}" in command
    assert f"--walltime-s {stage.request_walltime_s}" in command
    assert new.batch_id in new.submission.output

    entry = AuditEntry.objects.get(action="job.retry")
    assert entry.actor == shifter
    assert entry.target_id == str(job.pk)
    assert entry.result == f"queued attempt #2 as {new.batch_id}"
    assert entry.params["memory_mb"] == stage.request_memory_mb


def test_it_gives_one_submission_for_a_form_sent_twice(stage, shifter):
    job = failed_job(stage)
    form_key = key()
    first, created1 = services.job_retry_request(job=job, actor=shifter, idempotency_key=form_key)
    second, created2 = services.job_retry_request(job=job, actor=shifter, idempotency_key=form_key)
    assert created1
    assert not created2
    assert first.pk == second.pk
    assert len(runs_started(submission_dir())) == 1
    assert job.attempts.count() == 2


def test_it_refuses_a_job_with_an_open_attempt(stage, shifter):
    job = failed_job(stage)
    retry(job, shifter)
    action, _ = retry(job, shifter)  # another operator, another form
    assert action.skipped == 1
    assert action.done == 0
    assert "attempt #2 is still queued" in action.messages[0]
    assert len(runs_started(submission_dir())) == 1
    assert AuditEntry.objects.filter(action="job.retry", result__startswith="refused").count() == 1


def test_it_respects_max_attempts(stage, shifter):
    job = failed_job(stage, attempts=3)
    assert job.max_attempts == 3
    action, _ = retry(job, shifter, force=True)
    assert action.skipped == 1
    assert "max attempts reached (3 of 3)" in action.messages[0]
    assert runs_started(submission_dir()) == []


def test_it_refuses_a_succeeded_job(stage, shifter):
    job = failed_job(stage)
    good = AttemptFactory(job=job, number=2, status=Attempt.Status.SUCCEEDED, exit_code=0)
    Job.objects.filter(pk=job.pk).update(good_attempt=good, state="succeeded", attempt_count=2)
    action, _ = retry(job, shifter)
    assert action.skipped == 1
    assert "already succeeded" in action.messages[0]
    assert runs_started(submission_dir()) == []


@pytest.mark.parametrize("state", ["held", "aborted", "finishing", "completed"])
def test_it_refuses_retries_in_a_stage_that_takes_no_submissions(stage, shifter, state):
    Stage.objects.filter(pk=stage.pk).update(state=state)
    job = failed_job(stage)
    action, _ = retry(job, shifter)
    assert action.skipped == 1
    assert action.done == 0
    assert runs_started(submission_dir()) == []


def test_it_does_not_retry_a_permanent_failure_class_unless_forced(stage, shifter, manager):
    job = failed_job(stage)
    error_class = classify(job, transient=False, actor=manager, title="missing-input-file")
    refused, _ = retry(job, shifter)
    assert refused.skipped == 1
    assert "'missing-input-file' is permanent" in refused.messages[0]
    assert runs_started(submission_dir()) == []

    forced, _ = retry(job, manager, force=True)
    assert forced.done == 1
    assert AuditEntry.objects.filter(action="job.retry", params__force=True).count() == 1
    assert len(runs_started(submission_dir())) == 1
    assert error_class.transient is False


def test_it_retries_a_transient_failure_class(stage, shifter, manager):
    job = failed_job(stage)
    classify(job, transient=True, actor=manager, title="xrootd")
    action, _ = retry(job, shifter)
    assert action.done == 1
    assert len(runs_started(submission_dir())) == 1


def test_it_asks_for_more_memory_and_time_by_the_documented_factor(stage, shifter, settings):
    settings.PRODMON_RETRY_MEMORY_MAX_MB = 4000
    job = failed_job(stage)
    Attempt.objects.filter(job=job).update(request_memory_mb=2000, request_walltime_s=3600)

    retry(job, shifter, more_resources=True)
    second = job.attempts.get(number=2)
    assert (second.request_memory_mb, second.request_walltime_s) == (3000, 5400)
    # The runner got the new limits.
    assert "--memory-mb 3000 --walltime-s 5400" in second.submission.command

    Attempt.objects.filter(pk=second.pk).update(status="failed", ended_at=timezone.now())
    Job.objects.filter(pk=job.pk).update(state="failed")
    retry(job, shifter, more_resources=True)
    third = job.attempts.get(number=3)
    assert third.request_memory_mb == 4000  # 4500 capped
    assert third.request_walltime_s == 8100
    assert "--memory-mb 4000 --walltime-s 8100" in third.submission.command


def test_it_uses_the_peak_memory_seen_when_it_is_higher(stage, shifter):
    job = failed_job(stage)
    Attempt.objects.filter(job=job).update(request_memory_mb=2000, peak_rss_bytes=3000 * 2**20)
    retry(job, shifter, more_resources=True)
    assert job.attempts.get(number=2).request_memory_mb == 3600  # 1.2 × 3000 MB


def test_it_uses_the_scouts_suggestion_when_there_is_one(stage, shifter, settings):
    """Five good scouts peaked at 4000 MiB after 10000 s: the progress work
    suggests p95 × 1.2 rounded up (4864 MiB; 12600 s, below the 8 h asked already)."""
    settings.PRODMON_SCOUT_JOBS = 5
    settings.PRODMON_SCOUT_MIN_JOBS = 5
    now = timezone.now()
    for i in range(5):
        scout = JobFactory(stage=stage, key=f"scout_{i}.root", state="succeeded")
        good = AttemptFactory(
            job=scout,
            number=1,
            status="succeeded",
            exit_code=0,
            wall_s=10000,
            peak_rss_bytes=4000 * 2**20,
            ended_at=now,
        )
        Job.objects.filter(pk=scout.pk).update(good_attempt=good, attempt_count=1)
    job = failed_job(stage)
    retry(job, shifter, more_resources=True)
    a = job.attempts.get(number=2)
    assert (a.request_memory_mb, a.request_walltime_s) == (4864, 8 * 3600)
    assert AuditEntry.objects.get(action="job.retry").params["resources"] == "scout suggestion"


def test_it_keeps_the_resources_without_more(stage, shifter):
    job = failed_job(stage)
    retry(job, shifter)
    a = job.attempts.get(number=2)
    assert (a.request_memory_mb, a.request_walltime_s) == (2000, 8 * 3600)


def test_it_closes_a_lost_attempt_and_stops_its_process_before_retrying(
    campaign, shifter, experiment, tmp_path
):
    from triage import services as triage_services

    stage = make_stage(campaign, tmp_path, "gen", "echo started; sleep 60; echo finished")
    job = failed_job(stage)
    retry(job, shifter)
    lost = job.attempts.get(number=2)
    wait_for(
        lambda: "started" in (attempt_workdir(lost.uid) / "job.log").read_text(),
        what="the payload to start",
    )
    # Its start was reported, then it fell silent: triage's sweep, an hour
    # later, calls it lost.
    production.attempt_record_start(
        experiment=experiment, identity=identity(job, lost), at=timezone.now(), hostname="wn01"
    )
    counts = triage_services.liveness_sweep(now=timezone.now() + dt.timedelta(hours=1))
    assert counts["lost"] == 1

    action, _ = retry(job, shifter)
    assert action.done == 1
    lost.refresh_from_db()
    assert lost.status == Attempt.Status.FAILED
    assert lost.batch_state == "lost"
    # The batch job was really removed: the payload never finished.
    exit_file, log = run_result(lost, timeout=20)
    assert "finished" not in log
    assert exit_file["signal"] == 15 or exit_file["exit_code"] == 143
    close = AuditEntry.objects.get(action="attempt.close", target_id=str(lost.pk))
    assert close.result.startswith("sent SIGTERM to process group")
    third = job.attempts.get(number=3)
    assert third.status == Attempt.Status.QUEUED
    cancel_run(third)


def test_it_applies_the_black_hole_list_and_records_a_refused_submit(stage, shifter, experiment):
    """Triage flags this very host as a black hole: the local backend refuses
    to run there, and the refusal is a failed attempt with the reason."""
    node_flag_black_hole(experiment=experiment, hostname=socket.gethostname(), actor=shifter)
    job = failed_job(stage)
    action, _ = retry(job, shifter)
    assert action.failed == 1
    assert action.state == BulkAction.State.FAILED
    attempt = job.attempts.get(number=2)
    assert attempt.status == Attempt.Status.FAILED
    assert attempt.batch_state == "submit_failed"
    event = BatchEvent.objects.get(attempt=attempt)
    assert event.kind == "submit_failed"
    assert "is on the node exclusion list" in event.reason
    sub = attempt.submission
    assert sub.state == Submission.State.FAILED
    assert f"ERROR this host ({socket.gethostname()}) is on the node exclusion list" in sub.output
    assert runs_started(submission_dir()) == []


def test_it_runs_locally_when_only_other_hosts_are_black_holes(stage, shifter, experiment):
    node_flag_black_hole(experiment=experiment, hostname="wn-bad.example.org", actor=shifter)
    job = failed_job(stage)
    action, _ = retry(job, shifter)
    assert action.done == 1
    exit_file, log = run_result(job.attempts.get(number=2))
    assert exit_file["exit_code"] == 0
    assert "generating gen_00001.root seed=42" in log


def test_it_refuses_a_stage_without_a_command(campaign, shifter):
    bare = StageFactory(campaign=campaign, name="bare")
    job = failed_job(bare)
    action, _ = retry(job, shifter)
    assert action.failed == 1
    assert "has no command" in action.messages[0]
    assert job.attempts.count() == 1  # no attempt spent on it
    assert runs_started(submission_dir()) == []


# --- the database's own guard ---------------------------------------------------------


def test_it_allows_one_open_attempt_per_job_among_those_prodmon_submitted(stage):
    job = failed_job(stage)
    sub = Submission.objects.create(stage=stage, kind="retry", backend="local")
    production.attempt_queue(job=job, submission=sub)
    with pytest.raises(IntegrityError), transaction.atomic():
        production.attempt_queue(job=job, submission=sub)


def test_it_never_refuses_an_attempt_that_ingest_discovers(stage, experiment):
    """A batch system's resubmission reports under a new uid: ingest records it
    even while prodmon's own attempt is open. Ingest must not lose data."""
    job = failed_job(stage)
    sub = Submission.objects.create(stage=stage, kind="retry", backend="local")
    ours = production.attempt_queue(job=job, submission=sub)
    production.attempt_record_start(
        experiment=experiment,
        identity=production.AttemptIdentity("mc2025a", "gen", job.key, uuid.uuid4()),
        at=timezone.now(),
        hostname="wn01.example.org",
    )
    assert job.attempts.filter(status__in=["queued", "running"]).count() == 2
    assert Attempt.objects.get(pk=ours.pk).status == "queued"


# --- bulk retry -------------------------------------------------------------------------


def test_it_runs_a_bulk_retry_and_counts_each_outcome(
    stage, shifter, experiment, django_capture_on_commit_callbacks
):
    jobs = [failed_job(stage, f"gen_{i:05d}.root") for i in range(5)]
    exhausted = failed_job(stage, "gen_99999.root", attempts=3)
    with django_capture_on_commit_callbacks(execute=True):
        action, created = services.bulk_retry_request(
            experiment=experiment,
            job_ids=[j.pk for j in jobs] + [exhausted.pk],
            filters={"stage": str(stage.pk), "state": "failed"},
            actor=shifter,
            idempotency_key=key(),
            stage=stage,
        )
    action.refresh_from_db()
    assert created
    assert (action.state, action.total, action.done, action.skipped) == ("done", 6, 5, 1)
    assert action.result == "5 submitted, 0 failed, 1 skipped of 6"
    [submission] = Submission.objects.filter(action=action)
    assert submission.attempts.count() == 5
    assert submission.command.count("local_runner.py") == 5
    # Each of the five really ran, once, with its own input.
    logs = {payload_output(a) for a in submission.attempts.all()}
    assert logs == {f"generating {j.key} seed=42" for j in jobs}
    assert len(runs_started(submission_dir())) == 5
    assert AuditEntry.objects.filter(action="bulk.retry.request").count() == 1
    assert AuditEntry.objects.get(action="retry.finished").result == action.result
    assert AuditEntry.objects.filter(action="job.retry", params__action=action.pk).count() == 6


def test_it_stops_a_bulk_retry_that_was_cancelled(stage, shifter, experiment, settings):
    settings.PRODMON_ACTIONS_RUNNER = "none"  # scheduled by hand below
    jobs = [failed_job(stage, f"gen_{i:05d}.root") for i in range(3)]
    action, _ = services.bulk_retry_request(
        experiment=experiment,
        job_ids=[j.pk for j in jobs],
        filters={},
        actor=shifter,
        idempotency_key=key(),
    )
    assert services.bulk_action_cancel(action=action, actor=shifter)
    assert services.bulk_action_run(action_id=action.pk) is None
    assert Attempt.objects.filter(status="queued").count() == 0
    assert runs_started(submission_dir()) == []
    assert not services.bulk_action_cancel(action=action, actor=shifter)  # too late


# --- launch, back-out, stage states ---------------------------------------------------------


def test_it_launches_a_stage_after_the_back_out_delay(stage, manager):
    jobs = [JobFactory(stage=stage, key=f"in_{i}.root") for i in range(3)]
    action, _ = services.stage_launch_request(
        stage=stage, actor=manager, idempotency_key=key(), delay_s=60
    )
    assert action.state == "pending"
    submission = Submission.objects.get(action=action)
    assert (submission.kind, submission.state) == ("initial", "pending")
    # Not yet: the back-out delay runs.
    assert services.bulk_action_run_due() == 0
    assert runs_started(submission_dir()) == []

    BulkAction.objects.filter(pk=action.pk).update(not_before=timezone.now())  # a minute later
    assert services.bulk_action_run_due() == 1
    action.refresh_from_db()
    assert (action.state, action.total, action.done) == ("done", 3, 3)
    submission.refresh_from_db()
    assert submission.state == "submitted"
    attempts = list(submission.attempts.all())
    assert {a.job_id for a in attempts} == {j.pk for j in jobs}
    assert {payload_output(a).split()[1] for a in attempts} == {j.key for j in jobs}
    assert AuditEntry.objects.filter(action="stage.launch.request").count() == 1


def test_it_cancels_a_launch_during_its_back_out_delay(stage, manager):
    JobFactory(stage=stage, key="in.root")
    action, _ = services.stage_launch_request(
        stage=stage, actor=manager, idempotency_key=key(), delay_s=1
    )
    assert services.bulk_action_cancel(action=action, actor=manager)
    BulkAction.objects.filter(pk=action.pk).update(not_before=timezone.now())
    assert services.bulk_action_run_due() == 0
    assert runs_started(submission_dir()) == []
    assert Submission.objects.get(action=action).state == "cancelled"
    assert AuditEntry.objects.get(action="launch.cancel").result == "cancelled before it started"


def test_it_runs_a_launch_on_a_timer_in_the_embedded_mode(
    transactional_db, stage, manager, settings
):
    settings.PRODMON_ACTIONS_RUNNER = "thread"
    JobFactory(stage=stage, key="in.root")
    action, _ = services.stage_launch_request(
        stage=stage, actor=manager, idempotency_key=key(), delay_s=0.5
    )
    assert BulkAction.objects.get(pk=action.pk).state == "pending"
    # Wait for the timer without touching the database meanwhile: SQLite's
    # in-memory test database takes one writer at a time.
    assert services.thread_runner_stop(cancel=False) == 0
    action.refresh_from_db()
    assert (action.state, action.done) == ("done", 1)
    [attempt] = Attempt.objects.filter(job__stage=stage)
    assert "generating in.root" in run_result(attempt)[1]


def _good_output(stage, campaign, key, output):
    job = JobFactory(stage=stage, key=key, state="succeeded")
    good = AttemptFactory(job=job, number=1, status="succeeded", exit_code=0)
    Job.objects.filter(pk=job.pk).update(good_attempt=good, attempt_count=1)
    OutputFile.objects.create(
        attempt=good, job=job, stage=stage, campaign=campaign, name=output, size=1
    )
    return job


def test_it_derives_a_dependent_stages_inputs_from_its_parents_outputs(
    campaign, stage, manager, tmp_path, django_capture_on_commit_callbacks
):
    reco = production.stage_create(
        campaign=campaign,
        name="reco",
        depends_on=[stage],
        command='echo "reco $PRODMON_STAGE $PRODMON_JOB"',
        environment=job_environment(tmp_path),
    )
    for i in range(2):
        _good_output(stage, campaign, f"gen_{i}.root", f"gen_{i}_out.root")
    with django_capture_on_commit_callbacks(execute=True):
        services.stage_launch_request(stage=reco, actor=manager, idempotency_key=key())
    assert sorted(Job.objects.filter(stage=reco).values_list("key", flat=True)) == [
        "gen_0_out.root",
        "gen_1_out.root",
    ]
    attempts = Attempt.objects.filter(job__stage=reco)
    assert {payload_output(a) for a in attempts} == {
        "reco reco gen_0_out.root",
        "reco reco gen_1_out.root",
    }


def test_it_launches_a_dependent_stage_when_its_parents_reach_its_completion_pct(
    campaign, stage, django_capture_on_commit_callbacks
):
    Stage.objects.filter(pk=stage.pk).update(expected_jobs=20)
    reco = production.stage_create(
        campaign=campaign, name="reco", depends_on=[stage], command="reco", completion_pct=95
    )
    Stage.objects.filter(pk=reco.pk).update(autolaunch=True, state="pending")
    for i in range(18):
        JobFactory(stage=stage, key=f"g{i}", state="succeeded")
    assert services.stage_autolaunch_check(stage_id=stage.pk) == []  # 90 %
    JobFactory(stage=stage, key="g18", state="succeeded")
    with django_capture_on_commit_callbacks(execute=True):
        [launch] = services.stage_autolaunch_check(stage_id=stage.pk)  # 95 %
    assert launch.actor_label == "autolaunch"
    # Later ends bring no new outputs: nothing is launched again.
    JobFactory(stage=stage, key="g19", state="succeeded")
    assert services.stage_autolaunch_check(stage_id=stage.pk) == []
    assert BulkAction.objects.filter(stage=reco, kind="launch").count() == 1
    reco.refresh_from_db()
    assert reco.state == "active"


def test_it_launches_inputs_that_arrive_after_the_autolaunch(
    campaign, stage, tmp_path, django_capture_on_commit_callbacks
):
    Stage.objects.filter(pk=stage.pk).update(expected_jobs=4)
    reco = production.stage_create(
        campaign=campaign,
        name="reco",
        depends_on=[stage],
        command='echo "reco $PRODMON_JOB"',
        completion_pct=50,
        environment=job_environment(tmp_path),
    )
    Stage.objects.filter(pk=reco.pk).update(autolaunch=True)
    for i in range(2):
        _good_output(stage, campaign, f"gen_{i}.root", f"gen_{i}_out.root")
    with django_capture_on_commit_callbacks(execute=True):
        [first] = services.stage_autolaunch_check(stage_id=stage.pk)  # 50 %
    first.refresh_from_db()
    assert (first.state, first.done) == ("done", 2)

    # A third parent job ends later: its output is launched too, at once.
    _good_output(stage, campaign, "gen_2.root", "gen_2_out.root")
    with django_capture_on_commit_callbacks(execute=True):
        [top_up] = services.stage_autolaunch_check(stage_id=stage.pk)
        # The same end seen twice (two workers) makes no second request.
        assert services.stage_autolaunch_check(stage_id=stage.pk) == []
    top_up.refresh_from_db()
    assert (top_up.state, top_up.total, top_up.done, top_up.actor_label) == (
        "done",
        1,
        1,
        "autolaunch",
    )
    [late] = Attempt.objects.filter(job__stage=reco, job__key="gen_2_out.root")
    assert payload_output(late) == "reco gen_2_out.root"
    # Every input of reco was submitted exactly once.
    assert sorted(Attempt.objects.filter(job__stage=reco).values_list("job__key", flat=True)) == [
        "gen_0_out.root",
        "gen_1_out.root",
        "gen_2_out.root",
    ]
    assert len(runs_started(submission_dir())) == 3
    requests = AuditEntry.objects.filter(action="stage.launch.request", target_id=str(reco.pk))
    assert [e.actor_label for e in requests] == ["autolaunch", "autolaunch"]


def test_it_does_not_top_up_while_the_first_autolaunch_waits_its_back_out(
    campaign, stage, settings
):
    settings.PRODMON_LAUNCH_BACKOUT_SECONDS = 60
    Stage.objects.filter(pk=stage.pk).update(expected_jobs=2)
    reco = production.stage_create(
        campaign=campaign, name="reco", depends_on=[stage], command="reco", completion_pct=50
    )
    Stage.objects.filter(pk=reco.pk).update(autolaunch=True)
    _good_output(stage, campaign, "gen_0.root", "gen_0_out.root")
    [first] = services.stage_autolaunch_check(stage_id=stage.pk)
    assert first.state == "pending"
    _good_output(stage, campaign, "gen_1.root", "gen_1_out.root")
    # The pending launch derives its inputs when it runs; cancelling it stays possible.
    assert services.stage_autolaunch_check(stage_id=stage.pk) == []
    assert BulkAction.objects.filter(stage=reco).count() == 1
    assert runs_started(submission_dir()) == []


def test_it_holds_and_releases_a_stage_and_asks_the_backend_about_its_queued_jobs(
    stage, manager, shifter
):
    job = failed_job(stage)
    retry(job, shifter)
    queued = job.attempts.get(number=2)
    services.stage_hold(stage=stage, actor=manager)
    stage.refresh_from_db()
    assert stage.state == "held"

    with pytest.raises(services.ActionRefused):
        services.stage_launch_request(stage=stage, actor=manager, idempotency_key=key())

    services.stage_release(stage=stage, actor=manager)
    stage.refresh_from_db()
    assert stage.state == "active"
    entries = list(AuditEntry.objects.filter(target_type="stage").order_by("pk"))
    assert [e.action for e in entries] == ["stage.hold", "stage.release"]
    # The local backend cannot hold a job, and says so for each queued one.
    for entry in entries:
        assert entry.params["batch"] == [f"{queued.batch_id}: the local backend cannot hold a job"]


def test_it_aborts_a_stage_and_removes_its_batch_jobs(campaign, manager, shifter, tmp_path):
    stage = make_stage(campaign, tmp_path, "gen", "echo started; sleep 60; echo finished")
    jobs = [failed_job(stage, f"gen_{i}.root") for i in range(2)]
    for j in jobs:
        retry(j, shifter)
    attempts = list(Attempt.objects.filter(job__stage=stage, status="queued"))
    for a in attempts:
        wait_for(
            lambda a=a: "started" in (attempt_workdir(a.uid) / "job.log").read_text(),
            what="the payload to start",
        )
    result = services.stage_abort(stage=stage, actor=manager)
    assert result.startswith("aborted: 2 batch jobs removed")
    assert Attempt.objects.filter(job__stage=stage, status__in=["queued", "running"]).count() == 0
    assert set(Attempt.objects.filter(batch_state="aborted").values_list("status", flat=True)) == {
        "failed"
    }
    # Both processes were really stopped.
    for a in attempts:
        _, log = run_result(a, timeout=20)
        assert "finished" not in log
    said = AuditEntry.objects.get(action="stage.abort").params["batch"]
    assert len(said) == 2
    assert all("sent SIGTERM to process group" in s for s in said)
    with pytest.raises(services.ActionRefused):
        services.stage_abort(stage=stage, actor=manager)


def test_it_finishes_what_is_running_then_completes(stage, manager, shifter, experiment):
    job = failed_job(stage)
    retry(job, shifter)
    assert services.stage_finish(stage=stage, actor=manager) == "finishing what is running"
    action, _ = retry(failed_job(stage, "other.root"), shifter)
    assert action.skipped == 1  # no new submissions while finishing

    # The reporter's end, ingested as the server would.
    attempt = job.attempts.get(number=2)
    run_result(attempt)
    production.attempt_record_end(
        experiment=experiment,
        identity=identity(job, attempt),
        at=timezone.now(),
        exit_code=0,
        signal=None,
        metrics=production.Metrics(),
    )
    services.stage_autolaunch_check(stage_id=stage.pk)
    stage.refresh_from_db()
    assert stage.state == "completed"


# --- recovery -------------------------------------------------------------------------------


def test_it_recovers_failed_jobs_and_missing_outputs_under_the_initial_submission(
    stage, manager, campaign, django_capture_on_commit_callbacks
):
    from prodmon.actions import selectors

    launch, _ = services.stage_launch_request(stage=stage, actor=manager, idempotency_key=key())
    initial = Submission.objects.get(action=launch)
    failed = failed_job(stage, "failed.root")
    ok = JobFactory(stage=stage, key="ok.root", expected_outputs=["ok_out.root"])
    missing = JobFactory(stage=stage, key="missing.root", expected_outputs=["missing_out.root"])
    for job in (ok, missing):
        good = AttemptFactory(job=job, number=1, status="succeeded", exit_code=0)
        Job.objects.filter(pk=job.pk).update(good_attempt=good, state="succeeded", attempt_count=1)
    OutputFile.objects.create(
        attempt=ok.attempts.get(),
        job=ok,
        stage=stage,
        campaign=campaign,
        name="ok_out.root",
        size=9,
    )
    items = selectors.recovery_candidates(stage=stage, recovery_type="all")
    assert {(i.job.key, i.reason) for i in items} == {
        ("failed.root", "failed"),
        ("missing.root", "missing_outputs"),
    }

    with django_capture_on_commit_callbacks(execute=True):
        action, _ = services.recovery_request(
            stage=stage,
            recovery_type="all",
            job_ids=[i.job.pk for i in items],
            actor=manager,
            idempotency_key=key(),
            delay_s=0,
        )
    action.refresh_from_db()
    assert (action.done, action.skipped) == (2, 0)
    recovery = Submission.objects.get(action=action)
    assert recovery.kind == "recovery"
    assert recovery.parent == initial
    missing.refresh_from_db()
    assert missing.good_attempt_id is None
    assert missing.state == "queued"
    assert missing.attempts.get(number=1).status == "failed"  # failed by the post-check
    assert AuditEntry.objects.filter(action="attempt.fail_post_check").count() == 1
    assert failed.attempts.count() == 2
    ran = {payload_output(a).split()[1] for a in recovery.attempts.all()}
    assert ran == {"failed.root", "missing.root"}


def test_it_recovers_a_job_whose_attempt_triage_calls_lost(
    stage, manager, experiment, django_capture_on_commit_callbacks
):
    from prodmon.actions import selectors
    from triage import services as triage_services

    job = JobFactory(stage=stage, key="silent.root", state="running", attempt_count=1)
    attempt = AttemptFactory(job=job, number=1, status="queued", started_at=None, ended_at=None)
    production.attempt_record_start(
        experiment=experiment, identity=identity(job, attempt), at=timezone.now(), hostname="wn9"
    )
    assert selectors.recovery_candidates(stage=stage, recovery_type="lost") == []
    triage_services.liveness_sweep(now=timezone.now() + dt.timedelta(hours=1))
    [item] = selectors.recovery_candidates(stage=stage, recovery_type="lost")
    assert (item.job.key, item.reason) == ("silent.root", "lost")
    with django_capture_on_commit_callbacks(execute=True):
        action, _ = services.recovery_request(
            stage=stage,
            recovery_type="lost",
            job_ids=[job.pk],
            actor=manager,
            idempotency_key=key(),
            delay_s=0,
        )
    action.refresh_from_db()
    assert action.done == 1
    attempt.refresh_from_db()
    assert (attempt.status, attempt.batch_state) == ("failed", "lost")
    assert "generating silent.root" in run_result(job.attempts.get(number=2))[1]


# --- the batch poll ---------------------------------------------------------------------------


def test_it_ends_an_attempt_whose_local_job_was_removed(campaign, shifter, tmp_path):
    stage = make_stage(campaign, tmp_path, "gen", "echo started; sleep 60")
    job = failed_job(stage)
    retry(job, shifter)
    attempt = job.attempts.get(number=2)
    wait_for(
        lambda: "started" in (attempt_workdir(attempt.uid) / "job.log").read_text(),
        what="the payload to start",
    )
    assert services.submission_poll() == 1
    attempt.refresh_from_db()
    assert (attempt.status, attempt.batch_state) == ("queued", "running")

    cancel_run(attempt)  # removed behind prodmon's back, e.g. by an operator
    run_result(attempt, timeout=20)
    services.submission_poll()
    attempt.refresh_from_db()
    assert attempt.status == "failed"
    assert attempt.batch_state in ("exit 143", "signal 15")
    assert list(BatchEvent.objects.filter(attempt=attempt).values_list("kind", flat=True)) == [
        "running",
        attempt.batch_state,
    ]


def test_it_lets_the_reporter_speak_before_the_batch_system_ends_a_running_attempt(
    campaign, shifter, experiment, tmp_path
):
    stage = make_stage(campaign, tmp_path, "gen", "echo working; exit 3")
    job = failed_job(stage)
    retry(job, shifter)
    attempt = job.attempts.get(number=2)
    production.attempt_record_start(
        experiment=experiment, identity=identity(job, attempt), at=timezone.now(), hostname="wn01"
    )
    assert run_result(attempt)[0]["exit_code"] == 3
    services.submission_poll()
    attempt.refresh_from_db()
    assert attempt.status == "running"  # within the grace period the reporter's end wins
    Attempt.objects.filter(pk=attempt.pk).update(
        last_heartbeat_at=timezone.now() - dt.timedelta(hours=1)
    )
    services.submission_poll()
    attempt.refresh_from_db()
    assert (attempt.status, attempt.exit_code, attempt.batch_state) == ("failed", 3, "exit 3")


def test_it_ends_an_attempt_the_local_runner_killed_for_its_memory(
    campaign, shifter, experiment, tmp_path
):
    stage = make_stage(
        campaign,
        tmp_path,
        "hog",
        "python3 -c 'import time; b = b\"x\" * (300 << 20); time.sleep(60)'",
    )
    Stage.objects.filter(pk=stage.pk).update(request_memory_mb=100)
    job = failed_job(stage)
    retry(job, shifter)
    attempt = job.attempts.get(number=2)
    exit_file, log = run_result(attempt, timeout=30)
    assert exit_file["limit"] == "memory"
    assert "memory limit exceeded" in log
    services.submission_poll()
    attempt.refresh_from_db()
    assert (attempt.status, attempt.batch_state, attempt.signal) == (
        "failed",
        "OUT_OF_MEMORY",
        9,
    )
    event = BatchEvent.objects.get(attempt=attempt, kind="OUT_OF_MEMORY")
    assert "of the 100 MB requested" in event.reason


def test_it_stores_each_event_of_an_htcondor_log_once_with_its_hold_code(stage, tmp_path):
    """No schedd runs here: the attempt is one the HTCondor backend would have
    submitted, and its job event log (HTCondor's own format) tells the rest."""
    job = failed_job(stage)
    submission = Submission.objects.create(stage=stage, kind="retry", backend="htcondor")
    attempt = production.attempt_queue(job=job, submission=submission)
    Attempt.objects.filter(pk=attempt.pk).update(batch_id="4242.0")
    workdir = attempt_workdir(attempt.uid)
    workdir.mkdir(parents=True)
    (workdir / "condor.log").write_text(
        "000 (4242.000.000) 2025-03-01 10:00:00 Job submitted from host: <10.0.0.1:9618>\n...\n"
        "012 (4242.000.000) 2025-03-01 10:30:00 Job was held.\n"
        "\tTransfer input files failure\n"
        "\tCode 13 Subcode 2\n...\n"
    )
    assert services.submission_poll() == 1
    services.submission_poll()
    assert BatchEvent.objects.filter(attempt=attempt).count() == 2
    attempt.refresh_from_db()
    assert attempt.status == "queued"
    assert (attempt.hold_reason_code, attempt.hold_reason_subcode) == (13, 2)
    assert attempt.hold_reason == "Transfer input files failure"
    assert attempt.batch_state == "job_held"


# --- resuming a request whose process died ----------------------------------------------------


def _half_run(action, owner="dead-process"):
    """What a web process killed mid-run leaves: the action claimed and running,
    its first job submitted for real, the rest untouched, and a lease that is
    about to run out."""
    from prodmon.actions.services.runner import _ActionRun

    BulkAction.objects.filter(pk=action.pk).update(
        state="running",
        started_at=timezone.now(),
        lease_owner=owner,
        lease_until=timezone.now() + dt.timedelta(seconds=60),
    )
    action.refresh_from_db()
    _ActionRun(action, owner=owner).one(action.job_ids[0])


def test_it_resumes_a_bulk_retry_left_running_by_a_dead_process(
    stage, shifter, experiment, settings
):
    settings.PRODMON_ACTIONS_RUNNER = "none"
    jobs = [failed_job(stage, f"gen_{i}.root") for i in range(3)]
    action, _ = services.bulk_retry_request(
        experiment=experiment,
        job_ids=[j.pk for j in jobs],
        filters={},
        actor=shifter,
        idempotency_key=key(),
    )
    _half_run(action)
    # While its lease holds, nobody else touches it.
    assert services.bulk_action_run_due() == 0
    assert services.bulk_action_run(action_id=action.pk) is None

    BulkAction.objects.filter(pk=action.pk).update(
        lease_until=timezone.now() - dt.timedelta(seconds=1)
    )
    assert services.bulk_action_run_due() == 1
    action.refresh_from_db()
    assert (action.state, action.total, action.done, action.skipped) == ("done", 3, 3, 0)
    assert action.result == "3 submitted, 0 failed, 0 skipped of 3"
    # Each job got exactly one new attempt, and each ran once.
    for job in jobs:
        assert job.attempts.count() == 2, job.key
    assert len(runs_started(submission_dir())) == 3
    assert AuditEntry.objects.get(action="retry.resume").result.startswith("resumed")
    # Finished: a second resume finds nothing.
    assert services.bulk_action_run(action_id=action.pk) is None


def test_it_resumes_an_attempt_queued_but_never_handed_over(stage, shifter, experiment, settings):
    """The process died between committing the queued attempt and the submit."""
    from prodmon.actions.services.runner import _ActionRun

    settings.PRODMON_ACTIONS_RUNNER = "none"
    jobs = [failed_job(stage, f"gen_{i}.root") for i in range(2)]
    action, _ = services.bulk_retry_request(
        experiment=experiment,
        job_ids=[j.pk for j in jobs],
        filters={},
        actor=shifter,
        idempotency_key=key(),
    )
    BulkAction.objects.filter(pk=action.pk).update(
        state="running",
        started_at=timezone.now(),
        lease_owner="dead",
        lease_until=timezone.now() - dt.timedelta(seconds=1),
    )
    action.refresh_from_db()
    run = _ActionRun(action, owner="dead")
    submission = run._submission_for(jobs[0].stage)
    queued, _ = run._queue(jobs[0].pk, submission)  # committed, never submitted
    assert queued.batch_id == ""

    assert services.bulk_action_run(action_id=action.pk) is not None
    action.refresh_from_db()
    assert (action.state, action.done) == ("done", 2)
    queued.refresh_from_db()
    assert queued.batch_id.startswith("local:")  # the same attempt, handed over now
    assert jobs[0].attempts.count() == 2
    assert "generating gen_0.root" in run_result(queued)[1]


def test_it_stops_a_run_that_lost_its_lease(stage, shifter, experiment, settings):
    """Two processes never both run an action: the old one, back from a long
    stall, finds its lease taken and stops before the next job."""
    from prodmon.actions.services.runner import _ActionRun

    settings.PRODMON_ACTIONS_RUNNER = "none"
    settings.PRODMON_ACTIONS_LEASE_SECONDS = 0.01
    jobs = [failed_job(stage, f"gen_{i}.root") for i in range(2)]
    action, _ = services.bulk_retry_request(
        experiment=experiment,
        job_ids=[j.pk for j in jobs],
        filters={},
        actor=shifter,
        idempotency_key=key(),
    )
    BulkAction.objects.filter(pk=action.pk).update(
        state="running", started_at=timezone.now(), lease_owner="old"
    )
    action.refresh_from_db()
    stalled = _ActionRun(action, owner="old")
    stalled.renewed_at = timezone.now() - dt.timedelta(seconds=1)  # it stalled a while
    BulkAction.objects.filter(pk=action.pk).update(lease_owner="new")  # resumed elsewhere
    stalled.run()
    assert Attempt.objects.filter(job__in=jobs, number=2).count() == 0
    action.refresh_from_db()
    assert action.state == "running"  # left to the process that holds the lease


def test_the_action_page_poll_resumes_a_dead_run(
    client, stage, shifter, experiment, settings, django_capture_on_commit_callbacks
):
    from django.urls import reverse

    settings.PRODMON_ACTIONS_RUNNER = "none"
    jobs = [failed_job(stage, f"gen_{i}.root") for i in range(2)]
    action, _ = services.bulk_retry_request(
        experiment=experiment,
        job_ids=[j.pk for j in jobs],
        filters={},
        actor=shifter,
        idempotency_key=key(),
    )
    _half_run(action)
    BulkAction.objects.filter(pk=action.pk).update(
        lease_until=timezone.now() - dt.timedelta(seconds=1)
    )
    settings.PRODMON_ACTIONS_RUNNER = "celery"  # eager: the kick runs it inline
    client.force_login(shifter)
    with django_capture_on_commit_callbacks(execute=True):
        client.get(reverse("api-action-status", args=[action.pk]))
    action.refresh_from_db()
    assert (action.state, action.done) == ("done", 2)
    assert action.messages == []
