"""The six D0 skimming partial-failure modes, each on a constructed event
stream sent through the real ingest API (start, heartbeats, end with
outputs), with Celery eager as in the test settings: the end's on-commit
hooks run classification and the partial-failure assessment for real."""

import json
import uuid

import pytest
from django.test import Client

from prodmon import services as production
from prodmon.models import Attempt, Job, Submission
from tests.factories import CampaignFactory, JobFactory, StageFactory
from triage import partial, selectors
from triage.models import AttemptClassification, PartialFailure

pytestmark = pytest.mark.django_db

SKIMS = ["skim_dimuon.root", "skim_jpsi.root", "skim_wenu.root"]


@pytest.fixture
def skim_stage(experiment):
    campaign = CampaignFactory(experiment=experiment, name="d0skim")
    return StageFactory(campaign=campaign, name="skim", job_type="d0reco")


@pytest.fixture
def api(ingest_token):
    return Client(HTTP_AUTHORIZATION=f"Bearer {ingest_token[1]}")


@pytest.fixture
def run(api, skim_stage, django_capture_on_commit_callbacks):
    """run(job_key, exit_code=0, outputs=[...], events=N, uid=...) -> Attempt:
    a start, one heartbeat and an end, as a worker node sends them."""

    def send(kind, body):
        r = api.post(f"/api/v1/ingest/{kind}/", json.dumps(body), content_type="application/json")
        assert r.status_code == 201, r.content
        return r

    def build(key, *, exit_code=0, outputs=(), events=None, uid=None):
        uid = uid or uuid.uuid4()
        ident = {"campaign": "d0skim", "stage": "skim", "job": key, "attempt": str(uid)}
        send("start", {**ident, "event_id": uuid.uuid4().hex, "host": "d0wn1.fnal.gov"})
        beat = {"cpu_s": 10.0, "wall_s": 20.0}
        send("heartbeat", {**ident, "event_id": uuid.uuid4().hex, "metrics": beat})
        metrics = {"wall_s": 600.0, **({"events_processed": events} if events is not None else {})}
        with django_capture_on_commit_callbacks(execute=True):
            send(
                "end",
                {
                    **ident,
                    "event_id": uuid.uuid4().hex,
                    "exit_code": exit_code,
                    "metrics": metrics,
                    "outputs": list(outputs),
                },
            )
        return Attempt.objects.get(uid=uid)

    return build


def skim_job(stage, key="raw_run1234_001.root", *, events=1000):
    return JobFactory(stage=stage, key=key, expected_outputs=SKIMS, events_expected=events)


def out(name, size=5000, events=10):
    return {"name": name, "size": size, "events": events}


def kinds(attempt) -> dict[str, PartialFailure]:
    return {p.kind: p for p in PartialFailure.objects.filter(attempt=attempt)}


def test_it_finds_nothing_wrong_with_a_complete_skim(run, skim_stage):
    job = skim_job(skim_stage)
    attempt = run(job.key, outputs=[out(n) for n in SKIMS], events=1000)
    assert attempt.status == "succeeded"
    assert kinds(attempt) == {}
    job.refresh_from_db()
    assert job.state == "succeeded"


def test_it_calls_a_job_with_no_expected_output_a_total_failure(run, skim_stage):
    job = skim_job(skim_stage)
    attempt = run(job.key, exit_code=65, outputs=[], events=200)
    found = kinds(attempt)
    assert set(found) == {"job-failed"}
    row = found["job-failed"]
    assert (row.severity, row.redo_what, row.redo) == ("failure", "inputs", [job.key])
    assert row.resolved_at is None
    assert job.pk in selectors.attention_job_ids("job-failed", {skim_stage.campaign.experiment_id})


def test_it_lists_the_missing_outputs_of_a_partly_failed_job(run, skim_stage):
    job = skim_job(skim_stage)
    # Exit 0, but one skim never appeared: the output check fails the attempt.
    attempt = run(job.key, outputs=[out(SKIMS[0]), out(SKIMS[2])], events=1000)
    assert attempt.status == "failed"
    cls = AttemptClassification.objects.get(attempt=attempt)
    assert cls.error_class.key == "check:missing-output"
    found = kinds(attempt)
    assert set(found) == {"job-partial"}
    assert found["job-partial"].redo_what == "outputs"
    assert found["job-partial"].redo == [SKIMS[1]]
    assert "2 of 3" in found["job-partial"].detail


def test_it_counts_an_empty_file_as_missing(run, skim_stage):
    job = skim_job(skim_stage)
    attempt = run(
        job.key, exit_code=1, outputs=[out(SKIMS[0]), out(SKIMS[1], size=0), out(SKIMS[2])]
    )
    assert kinds(attempt)["job-partial"].redo == [SKIMS[1]]


def test_it_catches_a_job_that_ended_early_without_notice(run, skim_stage):
    job = skim_job(skim_stage, events=1000)
    attempt = run(job.key, outputs=[out(n) for n in SKIMS], events=640)
    assert attempt.status == "failed"  # exit 0 is not enough: 360 events are missing
    assert AttemptClassification.objects.get(attempt=attempt).error_class.key == (
        "check:ended-early"
    )
    row = kinds(attempt)["ended-early"]
    assert (row.events_done, row.events_expected) == (640, 1000)
    assert row.redo == [f"{job.key} events 641-1000"]
    job.refresh_from_db()
    assert job.state == "failed"
    assert job.good_attempt_id is None


def test_it_accepts_exactly_the_expected_events(run, skim_stage):
    # The boundary: processed == expected is complete, one fewer is not.
    full = run(skim_job(skim_stage, "a.root").key, outputs=[out(n) for n in SKIMS], events=1000)
    short = run(skim_job(skim_stage, "b.root").key, outputs=[out(n) for n in SKIMS], events=999)
    assert full.status == "succeeded"
    assert kinds(full) == {}
    assert short.status == "failed"
    assert set(kinds(short)) == {"ended-early"}


def test_it_warns_but_does_not_fail_on_a_zero_event_output(run, skim_stage):
    job = skim_job(skim_stage)
    attempt = run(
        job.key,
        outputs=[out(SKIMS[0]), out(SKIMS[1], size=1800, events=0), out(SKIMS[2])],
        events=1000,
    )
    assert attempt.status == "succeeded"
    job.refresh_from_db()
    assert job.state == "succeeded"
    assert job.good_attempt_id == attempt.pk
    row = kinds(attempt)["empty-output"]
    assert (row.severity, row.redo) == ("warning", [SKIMS[1]])


def submit(stage, keys):
    """A prodmon submission of one queued attempt per job, as the submission
    layer makes them before handing them to the batch system."""
    submission = Submission.objects.create(stage=stage, backend="local")
    attempts = {}
    for key in keys:
        job = JobFactory(stage=stage, key=key, expected_outputs=SKIMS, events_expected=100)
        attempts[key] = production.attempt_queue(job=job, submission=submission)
    return submission, attempts


def sub_rows(submission):
    return list(PartialFailure.objects.filter(submission=submission, attempt__isnull=True))


def test_it_calls_a_submission_whose_jobs_all_failed_a_whole_failure(run, skim_stage):
    keys = ["raw_001.root", "raw_002.root", "raw_003.root"]
    submission, attempts = submit(skim_stage, keys)
    for key in keys[:2]:
        run(key, exit_code=92, uid=attempts[key].uid)
        assert sub_rows(submission) == []  # not judged while an attempt is open
    run(keys[2], exit_code=92, uid=attempts[keys[2]].uid)
    (row,) = sub_rows(submission)
    assert row.kind == "submission-failed"
    assert row.redo == keys
    assert row.redo_what == "inputs"
    # Each job is also a total failure of its own.
    assert PartialFailure.objects.filter(kind="job-failed", submission=submission).count() == 3


def test_it_lists_the_inputs_left_by_a_partly_failed_submission(run, skim_stage):
    keys = ["raw_011.root", "raw_012.root", "raw_013.root", "raw_014.root"]
    submission, attempts = submit(skim_stage, keys)
    for key in keys:
        ok = key in ("raw_011.root", "raw_013.root")
        run(
            key,
            exit_code=0 if ok else 1,
            outputs=[out(n) for n in SKIMS] if ok else [],
            events=100,
            uid=attempts[key].uid,
        )
    (row,) = sub_rows(submission)
    assert row.kind == "submission-partial"
    assert row.redo == ["raw_012.root", "raw_014.root"]
    assert "2 of 4" in row.detail
    campaign_id = skim_stage.campaign_id
    counts = selectors.campaign_attention_counts(campaign_id=campaign_id)
    assert counts["partial"]["submission-partial"] == 1
    job_ids = selectors.attention_job_ids("submission-partial", {skim_stage.campaign.experiment_id})
    assert job_ids == set(
        Job.objects.filter(key__in=["raw_012.root", "raw_014.root"]).values_list("pk", flat=True)
    )


def test_it_resolves_what_a_good_retry_redid(run, skim_stage):
    keys = ["raw_021.root", "raw_022.root"]
    submission, attempts = submit(skim_stage, keys)
    run(
        keys[0], exit_code=0, outputs=[out(n) for n in SKIMS], events=100, uid=attempts[keys[0]].uid
    )
    first = run(keys[1], exit_code=1, uid=attempts[keys[1]].uid)
    assert kinds(first)["job-failed"].resolved_at is None
    assert sub_rows(submission)[0].redo == [keys[1]]
    # A retry (another attempt, outside that submission) produces everything.
    retry = run(keys[1], exit_code=0, outputs=[out(n) for n in SKIMS], events=100)
    assert retry.status == "succeeded"
    assert kinds(first)["job-failed"].resolved_at is not None
    (row,) = sub_rows(submission)
    assert row.redo == []
    assert row.resolved_at is not None
    counts = selectors.campaign_attention_counts(campaign_id=skim_stage.campaign_id)
    assert counts["partial"]["job-failed"] == 0
    assert counts["partial"]["submission-partial"] == 0


def test_it_adds_no_finding_for_a_duplicate_completion(run, skim_stage):
    job = skim_job(skim_stage)
    first = run(job.key, outputs=[out(n) for n in SKIMS], events=1000)
    # The batch system ran it again; this run's dimuon skim came out empty.
    dup = run(job.key, outputs=[out(SKIMS[0], events=0), *map(out, SKIMS[1:])], events=1000)
    assert dup.status == "succeeded"
    assert dup.is_duplicate_completion
    assert kinds(dup) == {}  # its outputs do not count, so neither does their warning
    job.refresh_from_db()
    assert (job.good_attempt_id, job.duplicate_completions) == (first.pk, 1)


def test_it_leaves_nothing_to_redo_for_a_late_failure_after_success(run, skim_stage):
    job = skim_job(skim_stage)
    run(job.key, outputs=[out(n) for n in SKIMS], events=1000)
    late = run(job.key, exit_code=1, outputs=[out(SKIMS[0])])
    assert set(kinds(late)) == {"job-partial"}
    assert kinds(late)["job-partial"].resolved_at is not None


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        ([], {"job-failed"}),
        ([("a.root", 1, None)], {"job-partial"}),
        ([("a.root", 1, None), ("b.root", 1, None)], set()),
        ([("dir/a.root", 1, 0), ("b.root", 1, 3)], {"empty-output"}),
    ],
)
def test_it_judges_outputs_as_a_pure_function(outputs, expected):
    found = partial.attempt_findings(
        job_key="in.root",
        claimed_success=False,
        expected_outputs=["a.root", {"name": "b.root"}],
        outputs=[partial.OutputSeen(*o) for o in outputs],
        events_processed=None,
        events_expected=None,
    )
    assert {f.kind for f in found} == expected


def test_it_does_not_judge_a_submission_without_attempts():
    assert partial.submission_finding([]) is None
    every = [partial.SubmissionJob("a", True), partial.SubmissionJob("b", True)]
    assert partial.submission_finding(every) is None


def test_it_finds_a_submission_the_batch_system_refused_through_the_sweep(skim_stage):
    """A submit that failed ends its attempts from the batch side (no reporter
    ever ran, so no ingest hook): the classify sweep judges them."""
    from prodmon.actions.services.batch import attempt_end_from_batch
    from prodmon.submission.base import BatchState, BatchStatus
    from triage import tasks

    keys = ["raw_031.root", "raw_032.root"]
    submission, attempts = submit(skim_stage, keys)
    for attempt in attempts.values():
        attempt_end_from_batch(
            attempt=attempt,
            status=BatchStatus("", BatchState.FAILED, raw_state="submit_failed", reason="no quota"),
            events=[],
            kind="submit_failed",
        )
    assert sub_rows(submission) == []  # nothing judged yet: no hook ran
    tasks.attempt_classify_sweep_task()
    (row,) = sub_rows(submission)
    assert row.kind == "submission-failed"
    assert row.redo == keys
