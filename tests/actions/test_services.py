"""The action layer's services: retries and their rules, idempotency, recovery,
stage launches with their back-out delay, stage states, the batch poll, and
the database's own guard against a second open attempt."""

import datetime as dt
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
from prodmon.submission.base import BatchEventSpec, BatchState, BatchStatus
from tests.actions.conftest import failed_job
from tests.factories import AttemptFactory, JobFactory, StageFactory

pytestmark = pytest.mark.django_db


def key() -> str:
    return uuid.uuid4().hex


def retry(job, actor, **kwargs):
    return services.job_retry_request(job=job, actor=actor, idempotency_key=key(), **kwargs)


# --- one retry ------------------------------------------------------------------


def test_it_retries_a_failed_job_through_the_backend_with_the_reporter_identity(
    stage, shifter, fake_backend, settings
):
    settings.PRODMON_SUBMISSION_URL = "https://prodmon.example.org/"
    job = failed_job(stage, expected_outputs=["gen_00001_out.root"])
    action, created = retry(job, shifter)

    assert created
    assert action.state == BulkAction.State.DONE
    assert (action.total, action.done, action.failed, action.skipped) == (1, 1, 0, 0)
    new = job.attempts.get(number=2)
    assert new.status == Attempt.Status.QUEUED
    assert new.submission.kind == Submission.Kind.RETRY
    assert new.submission.state == Submission.State.SUBMITTED
    assert new.batch_id == "1000" or new.batch_id.isdigit()
    job.refresh_from_db()
    assert job.state == Job.State.QUEUED
    assert job.attempt_count == 2

    [spec] = fake_backend.submitted
    env = spec.environment
    assert env["PRODMON_URL"] == "https://prodmon.example.org"
    assert env["PRODMON_CAMPAIGN"] == "mc2025a"
    assert env["PRODMON_STAGE"] == "gen"
    assert env["PRODMON_JOB"] == job.key
    assert env["PRODMON_ATTEMPT"] == str(new.uid)
    assert env["PRODMON_OUTPUTS"] == "gen_00001_out.root"
    assert env["GEN_SEED"] == "42"  # the stage's configured environment
    assert spec.command == "echo generating $PRODMON_JOB"
    # The token travels as a file, readable by this account only, never inline.
    assert "PRODMON_TOKEN" not in env
    token_file = spec.token_file
    assert env["PRODMON_TOKEN_FILE"] == str(token_file)
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    assert token_file.read_text().startswith("pm_")

    entry = AuditEntry.objects.get(action="job.retry")
    assert entry.actor == shifter
    assert entry.target_id == str(job.pk)
    assert entry.result == f"queued attempt #2 as {new.batch_id}"
    assert entry.params["memory_mb"] == stage.request_memory_mb


def test_it_gives_one_submission_for_a_form_sent_twice(stage, shifter, fake_backend):
    job = failed_job(stage)
    form_key = key()
    first, created1 = services.job_retry_request(job=job, actor=shifter, idempotency_key=form_key)
    second, created2 = services.job_retry_request(job=job, actor=shifter, idempotency_key=form_key)
    assert created1
    assert not created2
    assert first.pk == second.pk
    assert len(fake_backend.submitted) == 1
    assert job.attempts.count() == 2


def test_it_refuses_a_job_with_an_open_attempt(stage, shifter, fake_backend):
    job = failed_job(stage)
    retry(job, shifter)
    action, _ = retry(job, shifter)  # another operator, another form
    assert action.skipped == 1
    assert action.done == 0
    assert "attempt #2 is still queued" in action.messages[0]
    assert len(fake_backend.submitted) == 1
    assert AuditEntry.objects.filter(action="job.retry", result__startswith="refused").count() == 1


def test_it_respects_max_attempts(stage, shifter, fake_backend):
    job = failed_job(stage, attempts=3)
    assert job.max_attempts == 3
    action, _ = retry(job, shifter, force=True)
    assert action.skipped == 1
    assert "max attempts reached (3 of 3)" in action.messages[0]
    assert fake_backend.submitted == []


def test_it_refuses_a_succeeded_job(stage, shifter, fake_backend):
    job = failed_job(stage)
    good = AttemptFactory(job=job, number=2, status=Attempt.Status.SUCCEEDED, exit_code=0)
    Job.objects.filter(pk=job.pk).update(good_attempt=good, state="succeeded", attempt_count=2)
    action, _ = retry(job, shifter)
    assert action.skipped == 1
    assert "already succeeded" in action.messages[0]


@pytest.mark.parametrize("state", ["held", "aborted", "finishing", "completed"])
def test_it_refuses_retries_in_a_stage_that_takes_no_submissions(stage, shifter, state):
    Stage.objects.filter(pk=stage.pk).update(state=state)
    job = failed_job(stage)
    action, _ = retry(job, shifter)
    assert action.skipped == 1
    assert action.done == 0


def test_it_does_not_retry_a_permanent_failure_class_unless_forced(
    stage, shifter, manager, fake_backend, hooks
):
    job = failed_job(stage)
    hooks(
        "triage.selectors",
        job_failure_classes=lambda job_ids: {
            pk: {"name": "missing-input-file", "transient": False} for pk in job_ids
        },
    )
    refused, _ = retry(job, shifter)
    assert refused.skipped == 1
    assert "'missing-input-file' is permanent" in refused.messages[0]

    forced, _ = retry(job, manager, force=True)
    assert forced.done == 1
    assert AuditEntry.objects.filter(action="job.retry", params__force=True).count() == 1


def test_it_retries_a_transient_failure_class(stage, shifter, hooks):
    hooks(
        "triage.selectors",
        job_failure_classes=lambda job_ids: {
            pk: {"name": "xrootd", "transient": True} for pk in job_ids
        },
    )
    action, _ = retry(failed_job(stage), shifter)
    assert action.done == 1


def test_it_ignores_a_broken_hook(stage, shifter, hooks):
    def broken(job_ids):
        raise RuntimeError("triage bug")

    hooks("triage.selectors", job_failure_classes=broken)
    action, _ = retry(failed_job(stage), shifter)
    assert action.done == 1


def test_it_asks_for_more_memory_and_time_by_the_documented_factor(stage, shifter, settings):
    settings.PRODMON_RETRY_MEMORY_MAX_MB = 4000
    job = failed_job(stage)
    Attempt.objects.filter(job=job).update(request_memory_mb=2000, request_walltime_s=3600)

    retry(job, shifter, more_resources=True)
    second = job.attempts.get(number=2)
    assert (second.request_memory_mb, second.request_walltime_s) == (3000, 5400)

    Attempt.objects.filter(pk=second.pk).update(status="failed", ended_at=timezone.now())
    Job.objects.filter(pk=job.pk).update(state="failed")
    retry(job, shifter, more_resources=True)
    third = job.attempts.get(number=3)
    assert third.request_memory_mb == 4000  # 4500 capped
    assert third.request_walltime_s == 8100


def test_it_uses_the_peak_memory_seen_when_it_is_higher(stage, shifter):
    job = failed_job(stage)
    Attempt.objects.filter(job=job).update(request_memory_mb=2000, peak_rss_bytes=3000 * 2**20)
    retry(job, shifter, more_resources=True)
    assert job.attempts.get(number=2).request_memory_mb == 3600  # 1.2 × 3000 MB


def test_it_uses_scout_suggestions_when_there_are_some(stage, shifter, hooks):
    hooks(
        "prodmon.progress.selectors",
        scout_resource_suggestion=lambda stage_id: {"memory_mb": 5200, "walltime_s": 20000},
    )
    job = failed_job(stage)
    retry(job, shifter, more_resources=True)
    a = job.attempts.get(number=2)
    assert (a.request_memory_mb, a.request_walltime_s) == (5200, 8 * 3600)
    assert AuditEntry.objects.get(action="job.retry").params["resources"] == "scout suggestion"


def test_it_keeps_the_resources_without_more(stage, shifter):
    job = failed_job(stage)
    retry(job, shifter)
    a = job.attempts.get(number=2)
    assert (a.request_memory_mb, a.request_walltime_s) == (2000, 8 * 3600)


def test_it_closes_a_lost_attempt_before_retrying(stage, shifter, fake_backend, hooks):
    job = failed_job(stage)
    retry(job, shifter)
    lost = job.attempts.get(number=2)
    Attempt.objects.filter(pk=lost.pk).update(status="running", started_at=timezone.now())
    hooks(
        "triage.selectors", attempt_liveness=lambda attempt_ids: dict.fromkeys(attempt_ids, "lost")
    )

    action, _ = retry(job, shifter)
    assert action.done == 1
    lost.refresh_from_db()
    assert lost.status == Attempt.Status.FAILED
    assert lost.batch_state == "lost"
    assert fake_backend.cancelled == [lost.batch_id]
    assert job.attempts.get(number=3).status == Attempt.Status.QUEUED
    assert AuditEntry.objects.filter(action="attempt.close", target_id=str(lost.pk)).exists()


def test_it_records_a_refused_submit_as_a_failed_attempt(stage, shifter, fake_backend):
    fake_backend.fail_with = "sbatch: error: invalid partition"
    job = failed_job(stage)
    action, _ = retry(job, shifter)
    assert action.failed == 1
    assert action.state == BulkAction.State.FAILED
    attempt = job.attempts.get(number=2)
    assert attempt.status == Attempt.Status.FAILED
    assert attempt.batch_state == "submit_failed"
    event = BatchEvent.objects.get(attempt=attempt)
    assert event.kind == "submit_failed"
    assert "invalid partition" in event.reason
    sub = attempt.submission
    assert sub.state == Submission.State.FAILED
    assert "ERROR sbatch: error: invalid partition: refused" in sub.output


def test_it_refuses_a_stage_without_a_command(campaign, shifter, fake_backend):
    bare = StageFactory(campaign=campaign, name="bare")
    job = failed_job(bare)
    action, _ = retry(job, shifter)
    assert action.failed == 1
    assert "has no command" in action.messages[0]
    assert job.attempts.count() == 1  # no attempt spent on it
    assert fake_backend.submitted == []


# --- the database's own guard ---------------------------------------------------------


def test_it_allows_one_open_attempt_per_job_among_those_prodmon_submitted(stage):
    job = failed_job(stage)
    sub = Submission.objects.create(stage=stage, kind="retry", backend="fake")
    production.attempt_queue(job=job, submission=sub)
    with pytest.raises(IntegrityError), transaction.atomic():
        production.attempt_queue(job=job, submission=sub)


def test_it_never_refuses_an_attempt_that_ingest_discovers(stage, experiment):
    """A batch system's resubmission reports under a new uid: ingest records it
    even while prodmon's own attempt is open. Ingest must not lose data."""
    job = failed_job(stage)
    sub = Submission.objects.create(stage=stage, kind="retry", backend="fake")
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
    stage, shifter, experiment, fake_backend, django_capture_on_commit_callbacks
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
    assert submission.command.count("fake-submit") == 5
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
    assert not services.bulk_action_cancel(action=action, actor=shifter)  # too late


# --- launch, back-out, stage states ---------------------------------------------------------


def test_it_launches_a_stage_after_the_back_out_delay(stage, manager, fake_backend, settings):
    jobs = [JobFactory(stage=stage, key=f"in_{i}.root") for i in range(3)]
    action, _ = services.stage_launch_request(
        stage=stage, actor=manager, idempotency_key=key(), delay_s=60
    )
    assert action.state == "pending"
    submission = Submission.objects.get(action=action)
    assert (submission.kind, submission.state) == ("initial", "pending")
    # Not yet: the back-out delay runs.
    assert services.bulk_action_run_due() == 0
    assert fake_backend.submitted == []

    BulkAction.objects.filter(pk=action.pk).update(not_before=timezone.now())  # a minute later
    assert services.bulk_action_run_due() == 1
    action.refresh_from_db()
    assert (action.state, action.total, action.done) == ("done", 3, 3)
    submission.refresh_from_db()
    assert submission.state == "submitted"
    assert {a.job_id for a in submission.attempts.all()} == {j.pk for j in jobs}
    assert AuditEntry.objects.filter(action="stage.launch.request").count() == 1


def test_it_cancels_a_launch_during_its_back_out_delay(stage, manager, fake_backend):
    JobFactory(stage=stage, key="in.root")
    action, _ = services.stage_launch_request(
        stage=stage, actor=manager, idempotency_key=key(), delay_s=1
    )
    assert services.bulk_action_cancel(action=action, actor=manager)
    BulkAction.objects.filter(pk=action.pk).update(not_before=timezone.now())
    assert services.bulk_action_run_due() == 0
    assert fake_backend.submitted == []
    assert Submission.objects.get(action=action).state == "cancelled"
    assert AuditEntry.objects.get(action="launch.cancel").result == "cancelled before it started"


def test_it_runs_a_launch_on_a_timer_in_the_embedded_mode(
    transactional_db, stage, manager, fake_backend, settings
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
    assert len(fake_backend.submitted) == 1


def test_it_derives_a_dependent_stages_inputs_from_its_parents_outputs(
    campaign, stage, manager, fake_backend, django_capture_on_commit_callbacks
):
    reco = production.stage_create(
        campaign=campaign, name="reco", depends_on=[stage], command="reco $PRODMON_JOB"
    )
    for i in range(2):
        job = JobFactory(stage=stage, key=f"gen_{i}.root", state="succeeded")
        good = AttemptFactory(job=job, number=1, status="succeeded", exit_code=0)
        Job.objects.filter(pk=job.pk).update(good_attempt=good)
        OutputFile.objects.create(
            attempt=good, job=job, stage=stage, campaign=campaign, name=f"gen_{i}_out.root", size=1
        )
    with django_capture_on_commit_callbacks(execute=True):
        services.stage_launch_request(stage=reco, actor=manager, idempotency_key=key())
    assert sorted(Job.objects.filter(stage=reco).values_list("key", flat=True)) == [
        "gen_0_out.root",
        "gen_1_out.root",
    ]
    assert len(fake_backend.submitted) == 2
    assert {s.environment["PRODMON_STAGE"] for s in fake_backend.submitted} == {"reco"}


def test_it_launches_a_dependent_stage_when_its_parents_reach_its_completion_pct(
    campaign, stage, fake_backend, django_capture_on_commit_callbacks
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
    # Later ends do not launch it again.
    JobFactory(stage=stage, key="g19", state="succeeded")
    assert services.stage_autolaunch_check(stage_id=stage.pk) == []
    assert BulkAction.objects.filter(stage=reco, kind="launch").count() == 1
    reco.refresh_from_db()
    assert reco.state == "active"


def test_it_holds_and_releases_a_stage_and_its_queued_batch_jobs(
    stage, manager, shifter, fake_backend
):
    job = failed_job(stage)
    retry(job, shifter)
    queued = job.attempts.get(number=2)
    services.stage_hold(stage=stage, actor=manager)
    stage.refresh_from_db()
    assert stage.state == "held"
    assert fake_backend.held == [queued.batch_id]

    with pytest.raises(services.ActionRefused):
        services.stage_launch_request(stage=stage, actor=manager, idempotency_key=key())

    services.stage_release(stage=stage, actor=manager)
    stage.refresh_from_db()
    assert stage.state == "active"
    assert fake_backend.released == [queued.batch_id]
    assert [e.action for e in AuditEntry.objects.filter(target_type="stage").order_by("pk")] == [
        "stage.hold",
        "stage.release",
    ]


def test_it_aborts_a_stage_and_removes_its_batch_jobs(stage, manager, shifter, fake_backend):
    jobs = [failed_job(stage, f"gen_{i}.root") for i in range(2)]
    for j in jobs:
        retry(j, shifter)
    result = services.stage_abort(stage=stage, actor=manager)
    assert result.startswith("aborted: 2 batch jobs removed")
    assert len(fake_backend.cancelled) == 2
    assert Attempt.objects.filter(job__stage=stage, status__in=["queued", "running"]).count() == 0
    assert set(Attempt.objects.filter(batch_state="aborted").values_list("status", flat=True)) == {
        "failed"
    }
    with pytest.raises(services.ActionRefused):
        services.stage_abort(stage=stage, actor=manager)


def test_it_finishes_what_is_running_then_completes(stage, manager, shifter, experiment):
    job = failed_job(stage)
    retry(job, shifter)
    assert services.stage_finish(stage=stage, actor=manager) == "finishing what is running"
    action, _ = retry(failed_job(stage, "other.root"), shifter)
    assert action.skipped == 1  # no new submissions while finishing

    attempt = job.attempts.get(number=2)
    production.attempt_record_end(
        experiment=experiment,
        identity=production.AttemptIdentity("mc2025a", "gen", job.key, attempt.uid),
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
    stage, manager, fake_backend, campaign, django_capture_on_commit_callbacks
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


# --- the batch poll ---------------------------------------------------------------------------


def test_it_records_a_hold_and_ends_a_job_the_batch_system_removed(stage, shifter, fake_backend):
    job = failed_job(stage)
    retry(job, shifter)
    attempt = job.attempts.get(number=2)
    fake_backend.statuses[attempt.batch_id] = BatchStatus(
        attempt.batch_id,
        BatchState.HELD,
        raw_state="job_held",
        reason="memory usage exceeded request_memory",
        hold_reason_code=34,
        hold_reason_subcode=0,
    )
    assert services.submission_poll() == 1
    attempt.refresh_from_db()
    assert (attempt.hold_reason_code, attempt.hold_reason_subcode) == (34, 0)
    assert attempt.status == "queued"
    assert attempt.batch_state == "job_held"

    fake_backend.statuses[attempt.batch_id] = BatchStatus(
        attempt.batch_id, BatchState.CANCELLED, raw_state="CANCELLED"
    )
    services.submission_poll()
    attempt.refresh_from_db()
    assert attempt.status == "failed"
    assert attempt.batch_state == "CANCELLED"
    assert list(BatchEvent.objects.filter(attempt=attempt).values_list("kind", flat=True)) == [
        "job_held",
        "CANCELLED",
    ]


def test_it_lets_the_reporter_speak_before_the_batch_system_ends_a_running_attempt(
    stage, shifter, fake_backend, experiment
):
    job = failed_job(stage)
    retry(job, shifter)
    attempt = job.attempts.get(number=2)
    production.attempt_record_start(
        experiment=experiment,
        identity=production.AttemptIdentity("mc2025a", "gen", job.key, attempt.uid),
        at=timezone.now(),
        hostname="wn01",
    )
    fake_backend.statuses[attempt.batch_id] = BatchStatus(
        attempt.batch_id, BatchState.FAILED, raw_state="TIMEOUT", exit_code=0, signal=15
    )
    services.submission_poll()
    attempt.refresh_from_db()
    assert attempt.status == "running"  # within the grace period the reporter's end wins
    Attempt.objects.filter(pk=attempt.pk).update(
        last_heartbeat_at=timezone.now() - dt.timedelta(hours=1)
    )
    services.submission_poll()
    attempt.refresh_from_db()
    assert (attempt.status, attempt.signal) == ("failed", 15)


def test_it_stores_each_event_of_a_batch_log_once(stage, shifter, fake_backend):
    job = failed_job(stage)
    retry(job, shifter)
    attempt = job.attempts.get(number=2)
    now = timezone.now()
    events = [
        BatchEventSpec(seq=0, kind="submit", at=now, event_code=0),
        BatchEventSpec(
            seq=1,
            kind="job_held",
            at=now,
            event_code=12,
            hold_reason_code=13,
            hold_reason_subcode=2,
            reason="transfer input files failure",
        ),
    ]
    fake_backend.events_by_id[attempt.batch_id] = events
    fake_backend.statuses[attempt.batch_id] = BatchStatus(
        attempt.batch_id,
        BatchState.HELD,
        raw_state="job_held",
        hold_reason_code=13,
        hold_reason_subcode=2,
        reason="transfer input files failure",
    )
    services.submission_poll()
    services.submission_poll()
    assert BatchEvent.objects.filter(attempt=attempt).count() == 2
    attempt.refresh_from_db()
    assert attempt.hold_reason_code == 13
    assert attempt.hold_reason == "transfer input files failure"
