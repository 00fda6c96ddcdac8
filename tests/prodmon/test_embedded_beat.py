"""The embedded mode runs beat's schedule in-process (no broker, no beat):
every entry when it is due, once per interval, whatever process ticks."""

import datetime as dt
import json
import uuid

import pytest
from celery.schedules import crontab
from django.conf import settings as django_settings
from django.utils import timezone

from prodmon.embedded_beat import beat_tick
from prodmon.models import Attempt
from tests.factories import AttemptFactory, JobFactory, StageFactory
from triage.models import AttemptLiveness

pytestmark = pytest.mark.django_db


@pytest.fixture
def lost_attempt():
    now = timezone.now()
    return AttemptFactory(
        job=JobFactory(stage=StageFactory()),
        uid=uuid.uuid4(),
        status=Attempt.Status.RUNNING,
        started_at=now - dt.timedelta(hours=3),
        last_heartbeat_at=now - dt.timedelta(hours=2),
    )


def test_it_runs_an_entry_when_due_and_not_again_within_its_interval(
    settings, tmp_path, lost_attempt
):
    settings.CELERY_BEAT_SCHEDULE = {
        "liveness": {"task": "triage.liveness_sweep_task", "schedule": 60.0}
    }
    state = tmp_path / "beat.json"
    t0 = timezone.now()
    assert beat_tick(now=t0, path=state) == ["liveness"]
    assert AttemptLiveness.objects.get(attempt=lost_attempt).state == "lost"
    assert beat_tick(now=t0 + dt.timedelta(seconds=30), path=state) == []
    assert beat_tick(now=t0 + dt.timedelta(seconds=61), path=state) == ["liveness"]
    assert json.loads(state.read_text())["liveness"] == (t0 + dt.timedelta(seconds=61)).isoformat()


def test_a_crontab_entry_waits_for_its_time_instead_of_running_at_start(settings, tmp_path):
    settings.CELERY_BEAT_SCHEDULE = {
        "weekly": {
            "task": "progress.weekly_reports_send_task",
            "schedule": crontab(minute=0, hour=7, day_of_week="mon"),
        }
    }
    state = tmp_path / "beat.json"
    assert beat_tick(path=state) == []
    assert "weekly" in json.loads(state.read_text())


def test_an_unknown_task_is_skipped_and_the_others_still_run(settings, tmp_path, lost_attempt):
    settings.CELERY_BEAT_SCHEDULE = {
        "gone": {"task": "prodmon.no_such_task", "schedule": 10.0},
        "liveness": {"task": "triage.liveness_sweep_task", "schedule": 60.0},
    }
    assert beat_tick(path=tmp_path / "beat.json") == ["liveness"]
    assert AttemptLiveness.objects.get(attempt=lost_attempt).state == "lost"


def test_the_whole_real_schedule_runs_in_process(tmp_path, lost_attempt):
    ran = beat_tick(path=tmp_path / "beat.json", skip_tasks=("progress.progress_sweep_task",))
    interval_entries = [
        name
        for name, entry in django_settings.CELERY_BEAT_SCHEDULE.items()
        if not isinstance(entry["schedule"], crontab)
        and entry["task"] != "progress.progress_sweep_task"
    ]
    assert ran == interval_entries
    assert "actions-due-sweep" in ran  # resumes actions a dead process left running
    assert AttemptLiveness.objects.get(attempt=lost_attempt).state == "lost"
