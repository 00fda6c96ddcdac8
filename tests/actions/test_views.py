"""The action pages through the real views: permissions per role (viewer,
shifter, production manager, outsider), the bulk retry's confirmation with its
exact count, the stage operations, the progress endpoint and the audit log."""

import re
import uuid

import pytest
from django.urls import reverse

from prodmon.models import Attempt, AuditEntry, BulkAction, Job, Stage
from prodmon.submission.config import submission_dir
from tests.actions.conftest import classify, failed_job, payload_output, runs_started
from tests.factories import AttemptFactory, NodeFactory

pytestmark = pytest.mark.django_db


def retry_post(client, job, **extra):
    return client.post(
        reverse("job-retry", args=[job.pk]),
        {"idempotency_key": uuid.uuid4().hex, **extra},
    )


def hidden(html: str, name: str) -> str:
    return re.search(rf'name="{name}" value="([^"]*)"', html).group(1)


# --- retry one job ------------------------------------------------------------------------


def test_it_forbids_a_viewer_to_retry(client, viewer, stage):
    job = failed_job(stage)
    client.force_login(viewer)
    assert retry_post(client, job).status_code == 403
    assert job.attempts.count() == 1


def test_it_hides_other_experiments_jobs_from_an_outsider(client, outsider, stage):
    job = failed_job(stage)
    client.force_login(outsider)
    assert retry_post(client, job).status_code == 404
    assert client.get(reverse("stage-operations", args=[stage.pk])).status_code == 404
    assert client.post(reverse("stage-launch", args=[stage.pk])).status_code == 404


def test_it_lets_a_shifter_retry_from_the_job_page(client, shifter, stage):
    job = failed_job(stage)
    client.force_login(shifter)
    page = client.get(job.get_absolute_url()).content.decode()
    assert 'id="retry-button"' in page
    key = hidden(page, "idempotency_key")
    r = client.post(reverse("job-retry", args=[job.pk]), {"idempotency_key": key})
    assert r.status_code == 302
    assert r["Location"] == job.get_absolute_url()
    page = client.get(r["Location"]).content.decode()
    assert "Retry submitted: 1 submitted, 0 failed, 0 skipped of 1." in page
    assert "job.retry" in page  # the history card
    # The same form sent again (a double click) makes no second attempt.
    again = client.post(reverse("job-retry", args=[job.pk]), {"idempotency_key": key})
    assert again.status_code == 302
    assert job.attempts.count() == 2
    assert len(runs_started(submission_dir())) == 1
    assert payload_output(job.attempts.get(number=2)) == f"generating {job.key} seed=42"


def test_it_forbids_a_shifter_to_force(client, shifter, stage):
    job = failed_job(stage)
    client.force_login(shifter)
    assert retry_post(client, job, force="on").status_code == 403


def test_it_lets_a_manager_force_a_permanent_class(client, manager, stage):
    job = failed_job(stage)
    classify(job, transient=False, actor=manager, title="bad-config")
    client.force_login(manager)
    page = client.get(job.get_absolute_url()).content.decode()
    assert "Force retry" in page
    assert "bad-config" in page
    assert retry_post(client, job, force="on").status_code == 302
    assert job.attempts.count() == 2
    assert len(runs_started(submission_dir())) == 1


def test_it_says_why_a_job_cannot_be_retried(client, shifter, stage):
    job = failed_job(stage, attempts=3)
    client.force_login(shifter)
    page = client.get(job.get_absolute_url()).content.decode()
    assert 'id="retry-button"' not in page
    assert "max attempts reached (3 of 3)" in page


def test_it_only_accepts_posts_with_csrf(stage, shifter):
    from django.test import Client

    job = failed_job(stage)
    client = Client(enforce_csrf_checks=True)
    client.force_login(shifter)
    assert retry_post(client, job).status_code == 403
    assert client.get(reverse("job-retry", args=[job.pk])).status_code == 405


def test_it_shows_the_retry_panel_and_batch_facts_on_the_latest_attempt(client, shifter, stage):
    job = failed_job(stage)
    attempt = job.attempts.get()
    Attempt.objects.filter(pk=attempt.pk).update(
        hold_reason_code=34,
        hold_reason_subcode=0,
        hold_reason="memory exceeded",
        batch_state="held",
    )
    client.force_login(shifter)
    page = client.get(attempt.get_absolute_url()).content.decode()
    assert 'id="retry-button"' in page
    assert "<code>34.0</code> memory exceeded" in page


# --- bulk retry ------------------------------------------------------------------------------


def _failed_on(stage, node, n):
    jobs = []
    for i in range(n):
        job = Job.objects.create(stage=stage, key=f"{node.hostname}-{i}", state="failed")
        AttemptFactory(job=job, number=1, status="failed", exit_code=137, node=node)
        Job.objects.filter(pk=job.pk).update(attempt_count=1)
        jobs.append(job)
    return jobs


def test_it_confirms_a_bulk_retry_with_the_exact_count_then_runs_it(
    client, shifter, stage, django_capture_on_commit_callbacks
):
    bad = NodeFactory(hostname="wn-bad.example.org")
    good = NodeFactory(hostname="wn-good.example.org")
    on_bad = _failed_on(stage, bad, 4)
    _failed_on(stage, good, 2)
    Job.objects.filter(pk=on_bad[0].pk).update(attempt_count=3)  # out of attempts

    client.force_login(shifter)
    url = reverse("bulk-retry") + f"?stage={stage.pk}&node=wn-bad"
    page = client.get(url).content.decode()
    assert re.search(r'id="eligible-count">3<small>', page)
    assert "4 jobs match" in page
    assert "<strong>1</strong> — max attempts reached" in page

    with django_capture_on_commit_callbacks(execute=True):
        r = client.post(
            url,
            {
                "idempotency_key": hidden(page, "idempotency_key"),
                "selection": hidden(page, "selection"),
            },
        )
    assert r.status_code == 302
    action = BulkAction.objects.get()
    assert r["Location"] == action.get_absolute_url()
    assert (action.kind, action.total, action.done) == ("retry", 3, 3)
    assert action.stage == stage
    ran = {payload_output(a) for a in Attempt.objects.filter(submission__action=action)}
    assert ran == {f"generating {j.key} seed=42" for j in on_bad[1:]}
    page = client.get(r["Location"]).content.decode()
    assert "3 submitted, 0 failed, 0 skipped of 3" in page


def test_it_asks_again_when_the_selection_changed(client, shifter, stage):
    node = NodeFactory(hostname="wn1")
    _failed_on(stage, node, 2)
    client.force_login(shifter)
    url = reverse("bulk-retry") + f"?stage={stage.pk}"
    page = client.get(url).content.decode()
    _failed_on(stage, NodeFactory(hostname="wn2"), 1)  # a new failure arrives meanwhile
    r = client.post(
        url,
        {
            "idempotency_key": hidden(page, "idempotency_key"),
            "selection": hidden(page, "selection"),
        },
    )
    assert r.status_code == 200
    assert "changed since the page was shown" in r.content.decode()
    assert BulkAction.objects.count() == 0


def test_it_forbids_a_viewer_to_bulk_retry(client, viewer, stage):
    _failed_on(stage, NodeFactory(hostname="wn1"), 1)
    client.force_login(viewer)
    url = reverse("bulk-retry") + f"?stage={stage.pk}"
    page = client.get(url).content.decode()
    assert "needs the shifter role" in page
    r = client.post(url, {"idempotency_key": uuid.uuid4().hex, "selection": "whatever"})
    assert r.status_code == 403


def test_it_filters_a_bulk_retry_by_a_real_error_class(client, shifter, stage):
    from triage import services as triage_services
    from triage.models import AttemptClassification

    killed = _failed_on(stage, NodeFactory(hostname="wn1"), 3)
    segv = _failed_on(stage, NodeFactory(hostname="wn2"), 2)
    Attempt.objects.filter(job__in=segv).update(exit_code=139)
    for job in killed + segv:
        attempt = job.attempts.get()
        Attempt.objects.filter(pk=attempt.pk).update(ended_at=attempt.started_at)
        triage_services.attempt_classify(attempt_id=attempt.pk)
    klass = AttemptClassification.objects.get(attempt__job=killed[0]).error_class
    assert AttemptClassification.objects.get(attempt__job=segv[0]).error_class != klass
    client.force_login(shifter)
    page = client.get(reverse("bulk-retry") + f"?error_class={klass.pk}").content.decode()
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    assert "3 jobs match the filter" in text
    # The real class decides: permanent ones are held back unless forced.
    if klass.transient:
        assert re.search(r'id="eligible-count">3<small>', page)
    else:
        assert "Not retried: 3 — permanent failure class" in text


# --- stages ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "method"),
    [
        ("stage-launch", "post"),
        ("stage-hold", "post"),
        ("stage-finish", "post"),
        ("stage-abort", "post"),
        ("stage-abort", "get"),
        ("stage-recovery", "post"),
    ],
)
def test_it_forbids_a_shifter_to_launch_hold_or_abort(client, shifter, stage, name, method):
    client.force_login(shifter)
    r = getattr(client, method)(
        reverse(name, args=[stage.pk]), {"idempotency_key": uuid.uuid4().hex}
    )
    assert r.status_code == 403
    stage.refresh_from_db()
    assert stage.state == Stage.State.ACTIVE
    assert BulkAction.objects.count() == 0


def test_it_lets_a_manager_launch_and_cancel_during_the_back_out(client, manager, stage, settings):
    settings.PRODMON_LAUNCH_BACKOUT_SECONDS = 60
    Job.objects.create(stage=stage, key="in.root")
    client.force_login(manager)
    page = client.get(reverse("stage-operations", args=[stage.pk])).content.decode()
    assert "Launch 1 job" in page
    r = client.post(
        reverse("stage-launch", args=[stage.pk]),
        {"idempotency_key": hidden(page, "idempotency_key")},
    )
    action = BulkAction.objects.get()
    assert r["Location"] == action.get_absolute_url()
    page = client.get(action.get_absolute_url()).content.decode()
    assert "Are you sure?" in page
    assert 'id="cancel-action"' in page

    status = client.get(reverse("api-action-status", args=[action.pk])).json()
    assert status["state"] == "pending"
    assert 55 < status["seconds_left"] <= 60

    r = client.post(reverse("action-cancel", args=[action.pk]))
    assert r.status_code == 302
    action.refresh_from_db()
    assert action.state == "cancelled"
    assert runs_started(submission_dir()) == []


def test_it_lets_a_manager_hold_release_finish_and_abort(client, manager, stage):
    client.force_login(manager)
    for name, state in [
        ("stage-hold", "held"),
        ("stage-release", "active"),
        ("stage-finish", "completed"),
    ]:
        assert client.post(reverse(name, args=[stage.pk])).status_code == 302
        stage.refresh_from_db()
        assert stage.state == state
    Stage.objects.filter(pk=stage.pk).update(state="active")
    page = client.get(reverse("stage-abort", args=[stage.pk])).content.decode()
    assert "Abort stage gen?" in page
    assert client.post(reverse("stage-abort", args=[stage.pk])).status_code == 302
    stage.refresh_from_db()
    assert stage.state == "aborted"
    assert list(
        AuditEntry.objects.filter(target_type="stage")
        .order_by("pk")
        .values_list("action", flat=True)
    ) == ["stage.hold", "stage.release", "stage.finish", "stage.abort"]


def test_it_lets_a_viewer_see_the_stage_but_not_its_buttons(client, viewer, stage):
    client.force_login(viewer)
    page = client.get(reverse("stage-operations", args=[stage.pk])).content.decode()
    assert "need the production manager role" in page
    assert 'id="launch-stage"' not in page


def test_it_confirms_a_recovery_with_the_exact_count(
    client, manager, stage, django_capture_on_commit_callbacks
):
    failed_job(stage, "a.root")
    failed_job(stage, "b.root")
    failed_job(stage, "c.root", attempts=3)
    client.force_login(manager)
    url = reverse("stage-recovery", args=[stage.pk]) + "?type=failed"
    page = client.get(url).content.decode()
    assert re.search(r'id="eligible-count">2<small>', page)
    assert "3 inputs without a good output" in page
    with django_capture_on_commit_callbacks(execute=True):
        r = client.post(
            url,
            {
                "idempotency_key": hidden(page, "idempotency_key"),
                "selection": hidden(page, "selection"),
                "recovery_type": "failed",
            },
        )
    action = BulkAction.objects.get()
    assert r["Location"] == action.get_absolute_url()
    assert (action.kind, action.done) == ("recovery", 2)
    ran = {payload_output(a) for a in Attempt.objects.filter(submission__action=action)}
    assert ran == {"generating a.root seed=42", "generating b.root seed=42"}


# --- submissions, progress endpoint, audit ------------------------------------------------------


def test_it_shows_a_submissions_command_and_output(client, shifter, stage):
    job = failed_job(stage)
    client.force_login(shifter)
    retry_post(client, job)
    attempt = job.attempts.get(number=2)
    page = client.get(attempt.submission.get_absolute_url()).content.decode()
    # What the local backend ran (the runner, the reporter, the stage's command,
    # escaped) and what it answered (the batch id).
    assert "local_runner.py" in page
    assert "prodmon_report.py" in page
    assert "echo &quot;generating $PRODMON_JOB seed=$GEN_SEED&quot;" in page
    assert 'id="submission-output"' in page
    assert attempt.batch_id in page


def test_it_reports_progress_as_json_to_members_only(client, shifter, outsider, stage):
    job = failed_job(stage)
    client.force_login(shifter)
    retry_post(client, job)
    action = BulkAction.objects.get()
    data = client.get(reverse("api-action-status", args=[action.pk])).json()
    assert {k: data[k] for k in ("state", "total", "done", "failed", "skipped", "is_open")} == {
        "state": "done",
        "total": 1,
        "done": 1,
        "failed": 0,
        "skipped": 0,
        "is_open": False,
    }
    client.force_login(outsider)
    assert client.get(reverse("api-action-status", args=[action.pk])).status_code == 404
    assert client.get(action.get_absolute_url()).status_code == 404


def test_it_lists_the_audit_log_filtered_and_paginated(
    client, shifter, manager, stage, other_experiment
):
    from prodmon.services import audit_record

    for i in range(60):
        audit_record(
            actor=shifter,
            action="job.retry",
            experiment=stage.campaign.experiment,
            params={"n": i},
            result="ok",
        )
    audit_record(actor=manager, action="stage.launch.request", experiment=stage.campaign.experiment)
    audit_record(actor=None, action="secret.thing", experiment=other_experiment)
    client.force_login(shifter)
    page = client.get(reverse("audit-list")).content.decode()
    assert "61 entries" in page
    assert "secret.thing" not in page
    assert "page 1 of 2" in page
    page = client.get(reverse("audit-list") + "?action=stage.launch").content.decode()
    assert "1 entry" in page
    page = client.get(reverse("audit-list") + "?actor=paula").content.decode()
    assert "1 entry" in page
    page = client.get(reverse("audit-list") + "?actor=sam&page=2").content.decode()
    assert "page 2 of 2" in page


def test_it_reports_progress_to_a_read_token_of_the_same_experiment(
    client, shifter, stage, experiment, other_experiment
):
    from django.test import Client

    from tests.factories import make_token

    job = failed_job(stage)
    client.force_login(shifter)
    retry_post(client, job)
    url = reverse("api-action-status", args=[BulkAction.objects.get().pk])
    _, raw = make_token(experiment, scopes=("read",))
    assert Client(HTTP_AUTHORIZATION=f"Bearer {raw}").get(url).json()["done"] == 1
    _, other = make_token(other_experiment, scopes=("read",))
    assert Client(HTTP_AUTHORIZATION=f"Bearer {other}").get(url).status_code == 404
    _, ingest_only = make_token(experiment, scopes=("ingest",), name="wn2")
    assert Client(HTTP_AUTHORIZATION=f"Bearer {ingest_only}").get(url).status_code == 403
