"""Notifications by e-mail and webhook, their rate limit and retries, the
events that fire them (stage and campaign done, failure spikes), the weekly
report, and the settings page."""

import datetime as dt
import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.core import mail
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from prodmon.models import (
    Attempt,
    AuditEntry,
    Job,
    Membership,
    Notification,
    NotificationSubscription,
    ProgressEvent,
    ReportDelivery,
    ReportSubscription,
)
from prodmon.progress import notifications, services, tasks
from prodmon.progress.notifications import notify
from tests.factories import AttemptFactory, JobFactory
from tests.progress.conftest import node

pytestmark = pytest.mark.django_db


def subscribe(user, experiment, kinds=("stage_done", "campaign_done"), **fields):
    return services.notification_subscription_set(
        user=user,
        experiment=experiment,
        kinds=kinds,
        by_email=fields.pop("by_email", True),
        **fields,
    )


def finish_jobs(stage, n, state=Job.State.SUCCEEDED):
    first = stage.jobs.count()
    for i in range(first, first + n):
        JobFactory(stage=stage, key=f"{stage.name}_{i:04d}", state=state)


class Hook:
    """A real local HTTP server that records what webhooks post."""

    def __init__(self, status=200):
        self.requests = []
        self.status = status
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.requests.append({"headers": dict(self.headers), "body": body})
                self.send_response(hook.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    server = Hook()
    yield server
    server.close()


def test_it_emails_when_a_stage_and_then_the_campaign_are_done(
    member, experiment, gen, reco, django_capture_on_commit_callbacks
):
    gen.expected_jobs = reco.expected_jobs = 10
    gen.save()
    reco.save()
    subscribe(member, experiment)
    finish_jobs(gen, 9)
    with django_capture_on_commit_callbacks(execute=True):
        tasks.stage_after_end_task(gen.pk)
    assert mail.outbox == []  # 90 % < 95 %

    finish_jobs(gen, 1)
    with django_capture_on_commit_callbacks(execute=True):
        tasks.stage_after_end_task(gen.pk)
        tasks.stage_after_end_task(gen.pk)  # a second end: no second mail
    assert [m.subject for m in mail.outbox] == ["[prodmon dune] mc2025a/gen is done"]
    assert mail.outbox[0].to == ["sam@example.org"]
    assert f"/progress/stages/{gen.pk}/" in mail.outbox[0].body
    assert "10 of 10 jobs succeeded" in mail.outbox[0].body

    finish_jobs(reco, 10)
    with django_capture_on_commit_callbacks(execute=True):
        tasks.stage_after_end_task(reco.pk)
    assert [m.subject for m in mail.outbox[1:]] == [
        "[prodmon dune] mc2025a/reco is done",
        "[prodmon dune] campaign mc2025a is done",
    ]
    assert ProgressEvent.objects.filter(kind="stage_done").count() == 2
    assert AuditEntry.objects.filter(action="progress.campaign_done").count() == 1
    assert Notification.objects.filter(state="sent").count() == 3


def test_it_notifies_only_members_who_asked(member, manager, outsider, experiment, gen):
    subscribe(member, experiment, kinds=["failure_spike"])  # not stage_done
    subscribe(manager, experiment)
    NotificationSubscription.objects.create(
        user=outsider, experiment=experiment, kinds=["stage_done"]
    )
    Membership.objects.filter(user=manager).delete()  # left the experiment
    created = notify(kind="stage_done", experiment=experiment, subject="x")
    assert created == []


def test_it_delivers_webhooks_to_a_real_server(
    member, experiment, gen, hook, django_capture_on_commit_callbacks
):
    subscribe(
        member,
        experiment,
        kinds=["black_hole"],
        by_email=False,
        webhook_url=hook.url,
        webhook_secret="s3cret",
    )
    with django_capture_on_commit_callbacks(execute=True):
        [n] = notify(
            kind="black_hole",
            experiment=experiment,
            subject="wn042 is a black hole",
            body="30 failures in 10 minutes",
            url="/nodes/wn042/",
        )
    assert len(hook.requests) == 1
    request = hook.requests[0]
    payload = json.loads(request["body"])
    assert payload["kind"] == "black_hole"
    assert payload["experiment"] == "dune"
    assert payload["subject"] == "wn042 is a black hole"
    expected = "sha256=" + hmac.new(b"s3cret", request["body"], hashlib.sha256).hexdigest()
    assert request["headers"]["X-Prodmon-Signature"] == expected
    assert request["headers"]["Content-Type"] == "application/json"
    n.refresh_from_db()
    assert n.state == "sent"
    assert n.sent_at is not None
    assert n.tries == 1
    assert mail.outbox == []


def test_it_retries_a_failing_webhook_with_backoff_and_gives_up(
    member, experiment, settings, django_capture_on_commit_callbacks
):
    settings.PRODMON_NOTIFY_MAX_TRIES = 3
    settings.PRODMON_NOTIFY_BACKOFF_SECONDS = 60
    server = Hook(status=500)
    try:
        subscribe(
            member, experiment, kinds=["new_error_class"], by_email=False, webhook_url=server.url
        )
        with django_capture_on_commit_callbacks(execute=True):
            [n] = notify(kind="new_error_class", experiment=experiment, subject="new class")
        n.refresh_from_db()
        assert n.state == "pending"
        assert n.tries == 1
        assert "HTTP 500" in n.last_error
        first_delay = (n.next_try_at - timezone.now()).total_seconds()
        assert 50 < first_delay <= 60
        # Not due yet: the sweep leaves it alone.
        assert notifications.notifications_deliver_due() == 0
        for expected_tries, delay in ((2, 120), (3, None)):
            Notification.objects.filter(pk=n.pk).update(next_try_at=timezone.now())
            notifications.notifications_deliver_due()
            n.refresh_from_db()
            assert n.tries == expected_tries
            if delay:
                assert n.state == "pending"
                assert delay - 10 < (n.next_try_at - timezone.now()).total_seconds() <= delay
        assert n.state == "failed"
        assert len(server.requests) == 3
        # The server recovers: a failed row is not sent again.
        server.status = 200
        Notification.objects.filter(pk=n.pk).update(next_try_at=timezone.now())
        assert notifications.notifications_deliver_due() == 0
    finally:
        server.close()


def test_it_rate_limits_per_subscriber_and_kind(
    member, experiment, settings, django_capture_on_commit_callbacks
):
    settings.PRODMON_NOTIFY_MAX_PER_HOUR = 3
    subscribe(member, experiment, kinds=["new_error_class", "black_hole"])
    with django_capture_on_commit_callbacks(execute=True):
        for i in range(5):
            notify(kind="new_error_class", experiment=experiment, subject=f"class {i}")
        notify(kind="black_hole", experiment=experiment, subject="node")
    states = list(
        Notification.objects.filter(kind="new_error_class")
        .order_by("pk")
        .values_list("state", flat=True)
    )
    assert states == ["sent", "sent", "sent", "suppressed", "suppressed"]
    assert len(mail.outbox) == 4  # three classes and the black hole
    # An hour later the budget is back.
    Notification.objects.update(created_at=timezone.now() - dt.timedelta(minutes=61))
    with django_capture_on_commit_callbacks(execute=True):
        notify(kind="new_error_class", experiment=experiment, subject="class 6")
    assert len(mail.outbox) == 5


def test_it_never_raises_into_the_caller(member, experiment, monkeypatch, caplog):
    subscribe(member, experiment, kinds=["black_hole"])
    assert notify(kind="no_such_kind", experiment=experiment, subject="x") == []

    def broken(*args, **kwargs):
        raise RuntimeError("database on fire")

    monkeypatch.setattr(notifications, "_recipients", broken)
    assert notify(kind="black_hole", experiment=experiment, subject="x") == []
    assert "database on fire" in caplog.text


def test_it_keeps_a_notification_when_the_broker_is_down(
    member, experiment, monkeypatch, django_capture_on_commit_callbacks
):
    subscribe(member, experiment, kinds=["black_hole"])

    def down(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(tasks.notification_deliver_task, "delay", down)
    with django_capture_on_commit_callbacks(execute=True):
        [n] = notify(kind="black_hole", experiment=experiment, subject="x")
    n.refresh_from_db()
    assert n.state == "pending"
    assert mail.outbox == []
    monkeypatch.undo()
    assert notifications.notifications_deliver_due() == 1
    assert len(mail.outbox) == 1


# --- failure spikes -----------------------------------------------------------------------


def ended(stage, n, *, failed, minutes_ago):
    now = timezone.now()
    for i in range(n):
        job = JobFactory(stage=stage)
        status = Attempt.Status.FAILED if i < failed else Attempt.Status.SUCCEEDED
        at = now - dt.timedelta(minutes=minutes_ago + i * 0.5)
        AttemptFactory(
            job=job,
            number=1,
            status=status,
            node=node(),
            ended_at=at,
            started_at=at - dt.timedelta(minutes=30),
            exit_code=65 if i < failed else 0,
        )


def test_it_detects_a_failure_spike_once(
    member, experiment, gen, django_capture_on_commit_callbacks
):
    subscribe(member, experiment, kinds=["failure_spike"])
    ended(gen, 60, failed=3, minutes_ago=120)  # baseline: 5 %
    ended(gen, 30, failed=15, minutes_ago=5)  # last hour: 50 %
    spike = services.failure_spike(stage_id=gen.pk)
    assert spike is not None
    assert spike.rate == pytest.approx(0.5)
    assert spike.baseline == pytest.approx(0.05)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.stage_after_end(stage_id=gen.pk, force_spike_check=True) == [
            "failure_spike"
        ]
        assert services.stage_after_end(stage_id=gen.pk, force_spike_check=True) == []  # cooldown
    [message] = mail.outbox
    assert "failure spike in mc2025a/gen: 50% failed (baseline 5%)" in message.subject
    assert "15 of 30 attempts failed" in message.body


def test_it_needs_a_minimum_count_and_a_real_rise_for_a_spike(gen):
    ended(gen, 60, failed=3, minutes_ago=120)
    ended(gen, 10, failed=8, minutes_ago=5)  # 80 %, but only 10 attempts
    assert services.failure_spike(stage_id=gen.pk) is None


def test_it_sees_no_spike_at_a_steady_failure_rate(gen):
    ended(gen, 60, failed=12, minutes_ago=120)  # 20 %
    ended(gen, 30, failed=7, minutes_ago=5)  # 23 %
    assert services.failure_spike(stage_id=gen.pk) is None


# --- weekly report ------------------------------------------------------------------------


def test_it_mails_the_weekly_report_once(member, manager, experiment, gen):
    ReportSubscription.objects.create(user=member, experiment=experiment)
    week = services.last_full_week()
    at = dt.datetime.combine(week, dt.time(12), tzinfo=dt.UTC) + dt.timedelta(days=2)
    job = JobFactory(stage=gen)
    AttemptFactory(
        job=job,
        number=1,
        status="succeeded",
        node=node(),
        ended_at=at,
        started_at=at - dt.timedelta(hours=1),
        wall_s=3600,
        cpu_s=1800,
        exit_code=0,
    )
    AttemptFactory(
        job=JobFactory(stage=gen),
        number=1,
        status="failed",
        node=node("CERN"),
        ended_at=at,
        started_at=at - dt.timedelta(hours=2),
        wall_s=7200,
        cpu_s=100,
        exit_code=65,
    )
    call_command("send_weekly_reports")
    call_command("send_weekly_reports")  # again: nothing new
    [message] = mail.outbox
    assert message.to == ["sam@example.org"]
    assert f"week of {week}" in message.subject
    assert "2 attempts ended, 1 good, 1 failed" in message.body
    assert "dune/mc2025a" in message.body
    assert "CERN" in message.body
    html, mime = message.alternatives[0]
    assert mime == "text/html"
    assert "<table" in html
    [(name, content, ctype)] = message.attachments
    assert name.endswith("-by-stage.csv")
    assert ctype == "text/csv"
    assert "mc2025a/gen,2,1,1" in content
    assert ReportDelivery.objects.get().sent_at is not None


def test_it_sends_the_weekly_report_from_a_celery_task(member, experiment):
    ReportSubscription.objects.create(user=member, experiment=experiment)
    tasks.weekly_reports_send_task.delay()
    assert len(mail.outbox) == 1


# --- the settings page ------------------------------------------------------------------------


def test_it_saves_notification_settings(client, member, experiment, hook):
    client.force_login(member)
    prefix = f"e{experiment.pk}"
    response = client.post(
        reverse("progress-subscriptions"),
        {
            "experiment": experiment.pk,
            f"{prefix}-kinds": ["stage_done", "failure_spike"],
            f"{prefix}-by_email": "on",
            f"{prefix}-webhook_url": hook.url,
            f"{prefix}-weekly_report": "on",
        },
    )
    assert response.status_code == 302
    sub = NotificationSubscription.objects.get(user=member)
    assert sub.kinds == ["failure_spike", "stage_done"]
    assert sub.by_email
    assert sub.webhook_url == hook.url
    assert ReportSubscription.objects.filter(user=member, experiment=experiment).exists()
    assert AuditEntry.objects.filter(action="notifications.subscribe").exists()
    assert AuditEntry.objects.filter(action="reports.weekly_subscribe").exists()
    page = client.get(reverse("progress-subscriptions")).content.decode()
    assert "Saved your notifications for dune." in page


def test_it_refuses_settings_for_another_experiment_and_without_csrf(
    member, other_experiment, experiment
):
    client = Client()
    client.force_login(member)
    response = client.post(reverse("progress-subscriptions"), {"experiment": other_experiment.pk})
    assert response.status_code == 404
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(member)
    response = strict.post(reverse("progress-subscriptions"), {"experiment": experiment.pk})
    assert response.status_code == 403
    assert not NotificationSubscription.objects.exists()
