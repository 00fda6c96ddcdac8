"""The embedded mode's in-process sweeper: notification retries happen with
no cron and no beat, one sweep at a time, at most one per interval.

Everything is real: the sweeper thread, prodmon's progress sweep, the
database (committed rows: the thread has its own connection), a local HTTP
server standing in for the subscriber's webhook endpoint, and file locks.
"""

import fcntl
import os
import time

import pytest
from django.core.exceptions import MiddlewareNotUsed
from django.test import Client

from prodmon.models import Notification
from prodmon.progress import runner, services
from prodmon.progress.notifications import notify
from tests.progress.test_notifications import Hook

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def failing_once_hook():
    server = Hook(status=500)
    yield server
    server.close()


@pytest.fixture
def pending_retry(member, experiment, settings, failing_once_hook):
    """A webhook notification whose first delivery failed: pending, due soon."""
    settings.PRODMON_NOTIFY_BACKOFF_SECONDS = 0.3
    services.notification_subscription_set(
        user=member,
        experiment=experiment,
        kinds=["new_error_class"],
        by_email=False,
        webhook_url=failing_once_hook.url,
    )
    [n] = notify(kind="new_error_class", experiment=experiment, subject="new class: segfault")
    n.refresh_from_db()
    assert n.state == "pending"  # the in-process first try hit the 500
    assert n.tries == 1
    assert len(failing_once_hook.requests) == 1
    failing_once_hook.status = 200  # the endpoint recovers
    return n


def wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_the_sweeper_thread_retries_a_failed_delivery_without_cron(
    pending_retry, failing_once_hook, tmp_path
):
    sweeper = runner.EmbeddedSweeper(interval=0.5, path=tmp_path / "sweep.lock")
    sweeper.start()
    try:
        sent = wait_for(
            lambda: Notification.objects.get(pk=pending_retry.pk).state == Notification.State.SENT
        )
    finally:
        sweeper.stop()
    assert sent, "the sweeper did not deliver the retry"
    pending_retry.refresh_from_db()
    assert pending_retry.tries == 2
    assert len(failing_once_hook.requests) == 2
    assert sweeper.sweeps >= 1
    assert not sweeper.alive


def test_only_one_sweeps_at_a_time_and_once_per_interval(pending_retry, tmp_path):
    path = tmp_path / "sweep.lock"
    sweeper = runner.EmbeddedSweeper(interval=60, path=path)
    other = runner.EmbeddedSweeper(interval=60, path=path)  # another worker process
    time.sleep(0.35)  # the retry is due
    # Someone else (another process) holds the lock: skip, deliver nothing.
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        assert sweeper.run_once() is False
        pending_retry.refresh_from_db()
        assert pending_retry.state == "pending"
    finally:
        os.close(fd)
    # Free: it sweeps and delivers.
    assert sweeper.run_once() is True
    pending_retry.refresh_from_db()
    assert pending_retry.state == "sent"
    # Within the interval nobody sweeps again, whichever process asks.
    assert sweeper.run_once() is False
    assert other.run_once() is False
    assert (sweeper.sweeps, other.sweeps) == (1, 0)
    # Once the interval has passed (as written in the shared file), it does.
    os.truncate(path, 0)
    path.write_text(f"{time.time() - 61:.3f}\n")
    assert other.run_once() is True


def test_the_first_request_starts_the_sweeper_in_the_embedded_mode(
    settings, pending_retry, failing_once_hook, tmp_path
):
    settings.CELERY_TASK_ALWAYS_EAGER = True  # no broker
    settings.PRODMON_EMBEDDED_SWEEP_SECONDS = 0.5
    settings.VAR_DIR = tmp_path
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "prodmon.progress.runner.EmbeddedSweepMiddleware"]
    runner.stop()
    try:
        assert Client().get("/healthz").status_code == 200
        sweeper = runner.ensure_started()
        assert sweeper is not None
        assert sweeper.alive
        assert sweeper.path == tmp_path / runner.LOCK_NAME
        assert Client().get("/healthz").status_code == 200
        assert runner.ensure_started() is sweeper  # one per process
        assert wait_for(
            lambda: Notification.objects.get(pk=pending_retry.pk).state == Notification.State.SENT
        )
        assert len(failing_once_hook.requests) == 2
    finally:
        runner.stop()


def test_no_sweeper_with_a_broker_or_when_turned_off(settings):
    settings.PRODMON_EMBEDDED_SWEEP_SECONDS = 60
    settings.CELERY_TASK_ALWAYS_EAGER = False  # a broker: beat runs the sweep
    with pytest.raises(MiddlewareNotUsed):
        runner.EmbeddedSweepMiddleware(lambda request: None)
    assert runner.ensure_started() is None
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.PRODMON_EMBEDDED_SWEEP_SECONDS = 0
    with pytest.raises(MiddlewareNotUsed):
        runner.EmbeddedSweepMiddleware(lambda request: None)
    assert runner.ensure_started() is None
    with pytest.raises(ValueError, match="positive"):
        runner.EmbeddedSweeper(interval=0, path="x.lock")
