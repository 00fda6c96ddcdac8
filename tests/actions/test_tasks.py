"""The Celery tasks the lead wires in: thin, by id, eager in tests."""

import pytest

from prodmon import services as production
from prodmon.actions import tasks
from prodmon.models import BulkAction, Stage
from tests.factories import JobFactory
from tests.prodmon.test_celery_worker import broker_url, celery_worker_process  # noqa: F401

pytestmark = pytest.mark.django_db


def test_it_launches_a_dependent_stage_from_the_task(
    campaign, stage, django_capture_on_commit_callbacks
):
    reco = production.stage_create(
        campaign=campaign, name="reco", depends_on=[stage], command="reco", completion_pct=50
    )
    Stage.objects.filter(pk=reco.pk).update(autolaunch=True)
    Stage.objects.filter(pk=stage.pk).update(expected_jobs=2)
    JobFactory(stage=stage, key="a", state="succeeded")
    with django_capture_on_commit_callbacks(execute=True):
        tasks.stage_autolaunch_check_task.delay(stage.pk)
    launch = BulkAction.objects.get(stage=reco)
    assert (launch.kind, launch.state, launch.actor_label) == ("launch", "done", "autolaunch")


def test_it_names_its_tasks_for_the_beat_schedule():
    assert tasks.stage_autolaunch_check_task.name == "actions.stage_autolaunch_check_task"
    assert tasks.bulk_action_due_sweep_task.name == "actions.bulk_action_due_sweep_task"
    assert tasks.submission_poll_task.name == "actions.submission_poll_task"
    assert tasks.bulk_action_run_task.name == "actions.bulk_action_run_task"


def test_it_sweeps_and_polls_with_nothing_to_do():
    tasks.bulk_action_due_sweep_task.delay()
    tasks.submission_poll_task.delay()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("require_postgres", "celery_worker_process")
def test_a_real_worker_runs_a_bulk_retry(stage, shifter, experiment, settings, campaign):
    """On the real broker (Redis in CI) a worker claims the request and counts
    each job. The stage has no command, so nothing reaches a batch system."""
    import time
    import uuid

    from prodmon.actions import services
    from tests.actions.conftest import failed_job
    from tests.factories import StageFactory

    settings.PRODMON_ACTIONS_RUNNER = "celery"
    bare = StageFactory(campaign=campaign, name="bare")
    jobs = [failed_job(bare, f"in{i}.root") for i in range(3)]
    action, _ = services.bulk_retry_request(
        experiment=experiment,
        job_ids=[j.pk for j in jobs],
        filters={},
        actor=shifter,
        idempotency_key=uuid.uuid4().hex,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        action.refresh_from_db()
        if not action.is_open:
            break
        time.sleep(0.2)
    assert (action.state, action.failed) == ("failed", 3)
    assert "has no command" in action.messages[0]
