"""Retention: tails N days, full logs M days, per experiment; open jobs keep theirs."""

import datetime as dt
import io

import pytest
from django.core.management import call_command
from django.utils import timezone

from logserver import fulllog, indexing, retention, services
from logserver.models import FullLog, LogChunk, LogIndexCursor, LogLine, LogRetentionPolicy
from prodmon.models import Attempt, Job
from tests.factories import (
    AttemptFactory,
    CampaignFactory,
    JobFactory,
    StageFactory,
    UserFactory,
)
from triage import selectors as triage_selectors
from triage import services as triage_services
from triage.models import ErrorClass

pytestmark = pytest.mark.django_db
NOW = timezone.now()


@pytest.fixture(autouse=True)
def _filesystem_store(settings, tmp_path):
    settings.LOGSTORE_BACKEND = "filesystem"
    settings.LOGSTORE_ROOT = str(tmp_path / "logstore")
    settings.PRODMON_LOG_TAIL_RETENTION_DAYS = 30
    settings.PRODMON_FULL_LOG_RETENTION_DAYS = 60


def _attempt(
    experiment,
    *,
    ended_days_ago: float,
    job_state=Job.State.SUCCEEDED,
    text=b"a\nb\n",
    exit_code: int | None = None,
):
    stage = StageFactory(campaign=CampaignFactory(experiment=experiment))
    job = JobFactory(stage=stage, state=job_state)
    failed = job_state == Job.State.FAILED
    attempt = AttemptFactory(
        job=job,
        status=Attempt.Status.FAILED if failed else Attempt.Status.SUCCEEDED,
        exit_code=(exit_code if exit_code is not None else 1) if failed else 0,
        ended_at=NOW - dt.timedelta(days=ended_days_ago),
        log_bytes=len(text),
    )
    services.log_chunk_store(attempt=attempt, offset=0, data=text)
    indexing.log_index_attempt(attempt_id=attempt.pk)
    return attempt


def _full_log(attempt, *, days_ago: float) -> FullLog:
    full = fulllog.full_log_store(attempt=attempt, stream=io.BytesIO(b"whole log\n"), gzipped=False)
    FullLog.objects.filter(pk=full.pk).update(uploaded_at=NOW - dt.timedelta(days=days_ago))
    full.refresh_from_db()
    return full


def _has_tail(attempt) -> bool:
    return LogChunk.objects.filter(attempt=attempt).exists()


def test_it_removes_old_tails_by_each_experiment_s_policy(experiment, other_experiment):
    LogRetentionPolicy.objects.create(experiment=experiment, tail_days=7)
    short = _attempt(experiment, ended_days_ago=10)
    recent = _attempt(experiment, ended_days_ago=3)
    default = _attempt(other_experiment, ended_days_ago=10)  # site default: 30 days
    report = retention.logs_retention_enforce(now=NOW)
    assert not _has_tail(short)
    assert not LogLine.objects.filter(attempt=short).exists()
    assert LogIndexCursor.objects.get(attempt=short).purged_at is not None
    assert _has_tail(recent)
    assert _has_tail(default)
    assert LogLine.objects.filter(attempt=recent).count() == 2
    by_name = {e.experiment: e for e in report.experiments}
    assert (by_name["dune"].tails, by_name["dune"].chunks, by_name["dune"].chunk_bytes) == (1, 1, 4)
    assert by_name["mu2e"].tails == 0
    assert by_name["mu2e"].tail_days == 30


def test_it_never_removes_the_logs_of_a_job_still_open(experiment):
    LogRetentionPolicy.objects.create(experiment=experiment, tail_days=1, full_log_days=1)
    failed = _attempt(experiment, ended_days_ago=400, job_state=Job.State.FAILED)
    running = _attempt(experiment, ended_days_ago=400, job_state=Job.State.RUNNING)
    _full_log(failed, days_ago=400)
    report = retention.logs_retention_enforce(now=NOW)
    assert _has_tail(failed)
    assert _has_tail(running)
    assert FullLog.objects.filter(attempt=failed).exists()
    [result] = [e for e in report.experiments if e.experiment == "dune"]
    assert (result.tails, result.tails_kept_open, result.full_logs_kept_open) == (0, 2, 1)


def _failed_and_classified(experiment, *, exit_code: int, days_ago: float):
    """A failed job whose attempt triage has classified (by its exit code)."""
    attempt = _attempt(
        experiment, ended_days_ago=days_ago, job_state=Job.State.FAILED, exit_code=exit_code
    )
    _full_log(attempt, days_ago=days_ago)
    classification = triage_services.attempt_classify(attempt_id=attempt.pk)
    assert classification is not None
    return attempt, classification.error_class


def _set_status(error_class: ErrorClass, status: str) -> None:
    triage_services.error_class_set_status(
        error_class=error_class, status=status, actor=UserFactory()
    )


def test_it_keeps_what_is_open_in_triage_and_removes_what_is_resolved(experiment, other_experiment):
    # dune: tails 5 days, full logs 10; mu2e: tails 20, full logs 40.
    LogRetentionPolicy.objects.create(experiment=experiment, tail_days=5, full_log_days=10)
    LogRetentionPolicy.objects.create(experiment=other_experiment, tail_days=20, full_log_days=40)
    open_, open_class = _failed_and_classified(experiment, exit_code=65, days_ago=30)
    resolved, resolved_class = _failed_and_classified(experiment, exit_code=134, days_ago=30)
    ignored, ignored_class = _failed_and_classified(experiment, exit_code=137, days_ago=30)
    # Unclassified yet: triage has not looked at it, so it is open.
    pending = _attempt(experiment, ended_days_ago=30, job_state=Job.State.FAILED)
    # mu2e, resolved: 12 days is past dune's 5/10 days but within mu2e's 20/40.
    young, young_class = _failed_and_classified(other_experiment, exit_code=134, days_ago=12)
    # mu2e, resolved, 30 days: past its tails (20) but not its full logs (40).
    older, older_class = _failed_and_classified(other_experiment, exit_code=65, days_ago=30)
    assert open_class.is_open
    assert open_class.pk != resolved_class.pk != ignored_class.pk
    _set_status(resolved_class, ErrorClass.Status.RESOLVED)
    _set_status(ignored_class, ErrorClass.Status.IGNORED)
    _set_status(young_class, ErrorClass.Status.RESOLVED)
    _set_status(older_class, ErrorClass.Status.RESOLVED)

    assert {
        row["pk"] for row in triage_selectors.jobs_open_in_triage(experiment_id=experiment.pk)
    } == {open_.job_id, pending.job_id}
    report = retention.logs_retention_enforce(now=NOW)

    assert _has_tail(open_)
    assert FullLog.objects.filter(attempt=open_).exists()
    assert LogLine.objects.filter(attempt=open_).count() == 2
    assert _has_tail(pending)
    for gone in (resolved, ignored):
        assert not _has_tail(gone)
        assert not FullLog.objects.filter(attempt=gone).exists()
        assert not LogLine.objects.filter(attempt=gone).exists()
    assert _has_tail(young)
    assert FullLog.objects.filter(attempt=young).exists()
    assert not _has_tail(older)
    assert FullLog.objects.filter(attempt=older).exists()
    by_name = {e.experiment: e for e in report.experiments}
    dune, mu2e = by_name["dune"], by_name["mu2e"]
    assert (dune.tails, dune.tails_kept_open, dune.full_logs, dune.full_logs_kept_open) == (
        2,
        2,
        2,
        1,
    )
    assert (mu2e.tails, mu2e.tails_kept_open, mu2e.full_logs) == (1, 0, 0)


def test_a_regressed_or_merged_class_keeps_its_jobs_open(experiment):
    LogRetentionPolicy.objects.create(experiment=experiment, tail_days=1, full_log_days=1)
    regressed, regressed_class = _failed_and_classified(experiment, exit_code=65, days_ago=9)
    merged, merged_class = _failed_and_classified(experiment, exit_code=134, days_ago=9)
    _set_status(regressed_class, ErrorClass.Status.RESOLVED)
    _set_status(regressed_class, ErrorClass.Status.REGRESSED)
    # Resolved, but merged into a class that is still open: the merge moves
    # its attempts, and the open target keeps them.
    _set_status(merged_class, ErrorClass.Status.RESOLVED)
    triage_services.error_class_merge(source=merged_class, target=regressed_class, actor=None)
    assert triage_selectors.open_error_class_ids(experiment_id=experiment.pk) == {
        regressed_class.pk,
        merged_class.pk,
    }
    retention.logs_retention_enforce(now=NOW)
    assert _has_tail(regressed)
    assert _has_tail(merged)
    # Resolving the target closes both jobs: their logs go.
    _set_status(regressed_class, ErrorClass.Status.RESOLVED)
    retention.logs_retention_enforce(now=NOW)
    assert not _has_tail(regressed)
    assert not _has_tail(merged)
    assert not FullLog.objects.filter(attempt__in=[regressed, merged]).exists()


def test_a_job_that_succeeded_after_an_open_failure_keeps_its_logs(experiment):
    LogRetentionPolicy.objects.create(experiment=experiment, tail_days=1, full_log_days=1)
    failed, open_class = _failed_and_classified(experiment, exit_code=65, days_ago=9)
    # The retry succeeded; the first attempt's failure is still open in triage.
    retry = AttemptFactory(
        job=failed.job,
        number=2,
        status=Attempt.Status.SUCCEEDED,
        exit_code=0,
        ended_at=NOW - dt.timedelta(days=9),
        log_bytes=2,
    )
    services.log_chunk_store(attempt=retry, offset=0, data=b"x\n")
    Job.objects.filter(pk=failed.job_id).update(state=Job.State.SUCCEEDED)
    retention.logs_retention_enforce(now=NOW)
    assert _has_tail(failed)
    assert _has_tail(retry)
    _set_status(open_class, ErrorClass.Status.RESOLVED)
    retention.logs_retention_enforce(now=NOW)
    assert not _has_tail(failed)
    assert not _has_tail(retry)


def test_it_removes_full_logs_after_their_own_days(experiment, settings, tmp_path):
    LogRetentionPolicy.objects.create(experiment=experiment, tail_days=365, full_log_days=14)
    attempt = _attempt(experiment, ended_days_ago=20)
    old = _full_log(attempt, days_ago=20)
    path = tmp_path / "logstore" / old.storage_key
    assert path.is_file()
    young = _full_log(_attempt(experiment, ended_days_ago=20), days_ago=2)
    retention.logs_retention_enforce(now=NOW)
    assert not FullLog.objects.filter(pk=old.pk).exists()
    assert not path.exists()
    assert FullLog.objects.filter(pk=young.pk).exists()
    assert _has_tail(attempt)  # the tail has its own, longer retention


def test_a_dry_run_counts_but_deletes_nothing(experiment):
    LogRetentionPolicy.objects.create(experiment=experiment, tail_days=1, full_log_days=1)
    attempt = _attempt(experiment, ended_days_ago=5)
    _full_log(attempt, days_ago=5)
    out = io.StringIO()
    call_command("logs_retention", "--dry-run", stdout=out)
    assert "would remove 1 tails" in out.getvalue()
    assert "kept for jobs open in triage or running: 0 tails, 0 full logs" in out.getvalue()
    assert "dry run: nothing deleted" in out.getvalue()
    assert _has_tail(attempt)
    assert FullLog.objects.filter(attempt=attempt).exists()
    assert LogLine.objects.filter(attempt=attempt).count() == 2
    call_command("logs_retention", stdout=io.StringIO())
    assert not _has_tail(attempt)
    assert not FullLog.objects.filter(attempt=attempt).exists()


def test_the_reconciler_leaves_a_purged_tail_alone(experiment):
    LogRetentionPolicy.objects.create(experiment=experiment, tail_days=1)
    attempt = _attempt(experiment, ended_days_ago=5)
    retention.logs_retention_enforce(now=NOW)
    assert indexing.log_index_stale_attempt_ids() == []
    assert indexing.log_index_reconcile().lines == 0
    assert not LogLine.objects.filter(attempt=attempt).exists()


def test_the_periodic_task_enforces_retention(experiment):
    from logserver.tasks import logs_retention_task

    LogRetentionPolicy.objects.create(experiment=experiment, tail_days=1)
    attempt = _attempt(experiment, ended_days_ago=5)
    logs_retention_task.delay()
    assert not _has_tail(attempt)


def test_the_viewer_says_a_purged_tail_was_removed(experiment, client):
    from tests.factories import MembershipFactory, UserFactory

    LogRetentionPolicy.objects.create(experiment=experiment, tail_days=1)
    attempt = _attempt(experiment, ended_days_ago=5)
    retention.logs_retention_enforce(now=NOW)
    user = UserFactory()
    MembershipFactory(user=user, experiment=experiment)
    client.force_login(user)
    html = client.get(f"/attempts/{attempt.uid}/log").content.decode()
    assert "removed under the retention policy" in html
    assert 'id="L1"' not in html
