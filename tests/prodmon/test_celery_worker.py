"""A real Celery worker on a real broker (Redis in CI) runs the tasks that
ingest enqueues. PostgreSQL-only: the worker is a separate process and must
see the test database."""

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client

from prodmon.celery import app
from prodmon.models import StageProgressSample
from tests.conftest import service_missing
from tests.factories import CampaignFactory, StageFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("require_postgres")]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def broker_url():
    url = os.environ.get("CELERY_BROKER_URL", "")
    if not url:
        service_missing("needs a broker: set CELERY_BROKER_URL=redis://…")
    return url


@pytest.fixture
def celery_worker_process(broker_url):
    db = connection.settings_dict
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="prodmon.settings.embedded",
        CELERY_BROKER_URL=broker_url,
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
        f"/{db['NAME']}",
    )
    queue = f"test-{uuid.uuid4().hex[:8]}"
    # Tasks the worker enqueues itself (an end's fan-out) go to the same queue.
    env["CELERY_TASK_DEFAULT_QUEUE"] = queue
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "prodmon",
            "worker",
            "-Q",
            queue,
            "--pool=solo",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    overrides = {"task_always_eager": False, "task_default_queue": queue, "broker_url": broker_url}
    saved = {key: app.conf.get(key) for key in overrides}
    app.conf.update(overrides)
    yield proc
    app.conf.update(saved)
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_a_real_worker_samples_progress_after_an_attempt_ends(
    experiment, ingest_token, celery_worker_process
):
    stage = StageFactory(campaign=CampaignFactory(experiment=experiment, name="mc"), name="gen")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {ingest_token[1]}")
    body = {
        "event_id": uuid.uuid4().hex,
        "campaign": "mc",
        "stage": "gen",
        "job": "a.root",
        "attempt": str(uuid.uuid4()),
        "exit_code": 0,
    }
    r = client.post("/api/v1/ingest/end/", data=json.dumps(body), content_type="application/json")
    assert r.status_code == 201
    found = _wait_for(lambda: StageProgressSample.objects.filter(stage=stage).exists())
    if not found:
        celery_worker_process.terminate()
        out = celery_worker_process.communicate(timeout=10)[0].decode(errors="replace")
        pytest.fail(f"the worker never wrote the sample; worker output:\n{out[-3000:]}")
    sample = StageProgressSample.objects.get(stage=stage)
    assert (sample.succeeded, sample.failed, sample.running) == (1, 0, 0)
