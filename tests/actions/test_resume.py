"""Resumption with a real killed process, on PostgreSQL (a second process
shares the test database): a separate Python process runs a bulk retry and is
killed with SIGKILL half-way; once its lease has run out, the sweep resumes the
request, and every job ends up submitted exactly once."""

import datetime as dt
import os
import signal
import subprocess
import sys
import uuid

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from prodmon.actions import services
from prodmon.models import Attempt, AuditEntry, BulkAction
from prodmon.submission.config import submission_dir
from tests.actions.conftest import failed_job, payload_output, runs_started, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("require_postgres")]

N = 12

RUN = """
import django
django.setup()
from prodmon.actions import services
services.bulk_action_run(action_id={action_id})
"""


def _database_url() -> str:
    s = connection.settings_dict
    return f"postgres://{s['USER']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def test_it_resumes_a_bulk_retry_whose_process_was_killed(
    stage, shifter, experiment, settings, tmp_path
):
    settings.PRODMON_ACTIONS_RUNNER = "none"  # nothing in this process runs it by itself
    # A slow batch system: each hand-over takes half a second, so the kill
    # below lands half-way through the request.
    slow_python = tmp_path / "slow-python"
    slow_python.write_text(f'#!/bin/sh\nsleep 0.5\nexec {sys.executable} "$@"\n')
    slow_python.chmod(0o755)
    jobs = [failed_job(stage, f"gen_{i:05d}.root") for i in range(N)]
    action, _ = services.bulk_retry_request(
        experiment=experiment,
        job_ids=[j.pk for j in jobs],
        filters={},
        actor=shifter,
        idempotency_key=uuid.uuid4().hex,
    )
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "DJANGO_SETTINGS_MODULE": "prodmon.settings.test",
        "PRODMON_SUBMISSION_DIR": str(submission_dir()),
        "PRODMON_SUBMISSION_URL": settings.PRODMON_SUBMISSION_URL,
        "PRODMON_SUBMISSION_BACKEND": "local",
        "PRODMON_LOCAL_MAX_JOBS": "4",
        "PRODMON_SUBMISSION_PYTHON": str(slow_python),
    }
    web = subprocess.Popen(
        [sys.executable, "-c", RUN.format(action_id=action.pk)],
        cwd=django_settings.BASE_DIR,
        env=env,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: (
                Attempt.objects.filter(submission__action=action).exclude(batch_id="").count() >= 3
            ),
            timeout=60,
            what="the other process to submit a few jobs",
        )
        # The web process dies mid-run, with its children (as when its service
        # is stopped); the jobs it started run on in their own sessions.
        os.killpg(web.pid, signal.SIGKILL)
        web.wait(10)
    finally:
        if web.poll() is None:
            os.kill(web.pid, signal.SIGKILL)
            web.wait(10)
    action.refresh_from_db()
    assert action.state == BulkAction.State.RUNNING
    submitted_before = action.done
    assert 2 <= submitted_before < N, "the process was to die half-way"
    # While its lease holds, the sweep leaves it alone.
    assert services.bulk_action_run_due() == 0

    BulkAction.objects.filter(pk=action.pk).update(
        lease_until=timezone.now() - dt.timedelta(seconds=1)  # the lease ran out
    )
    assert services.bulk_action_run_due() == 1
    action.refresh_from_db()
    assert action.state == BulkAction.State.DONE
    assert (action.total, action.failed, action.skipped) == (N, 0, 0)
    assert action.done == N
    for job in jobs:
        attempts = list(job.attempts.filter(number__gt=1))
        assert len(attempts) == 1, job.key
        assert payload_output(attempts[0]) == f"generating {job.key} seed=42"
    assert len(runs_started(submission_dir())) == N
    assert AuditEntry.objects.filter(action="retry.resume").count() == 1
