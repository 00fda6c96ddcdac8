"""Lost and hung attempts: the sweep, a late heartbeat, and the selectors."""

import datetime as dt
import uuid

import pytest
from django.utils import timezone

from prodmon.models import Attempt
from tests.factories import AttemptFactory, JobFactory
from triage import selectors, services, tasks
from triage.models import AttemptLiveness

pytestmark = pytest.mark.django_db


@pytest.fixture
def running(stage):
    def build(*, heartbeat_ago: float, log_bytes: int = 100, cpu_s: float | None = 10.0):
        now = timezone.now()
        return AttemptFactory(
            job=JobFactory(stage=stage),
            uid=uuid.uuid4(),
            status=Attempt.Status.RUNNING,
            started_at=now - dt.timedelta(hours=1),
            last_heartbeat_at=now - dt.timedelta(seconds=heartbeat_ago),
            log_bytes=log_bytes,
            cpu_s=cpu_s,
        )

    return build


def state_of(attempt) -> str:
    return AttemptLiveness.objects.get(attempt=attempt).state


def test_it_marks_an_attempt_lost_after_three_missed_heartbeats(running, settings):
    settings.TRIAGE_HEARTBEAT_SECONDS = 60
    fresh = running(heartbeat_ago=60)
    edge = running(heartbeat_ago=170)  # under 3 x 60 s: not yet
    gone = running(heartbeat_ago=190)
    assert services.liveness_sweep() == {"ok": 2, "lost": 1, "hung": 0}
    assert (state_of(fresh), state_of(edge), state_of(gone)) == ("ok", "ok", "lost")
    assert selectors.attempt_liveness([fresh.pk, gone.pk]) == {fresh.pk: "ok", gone.pk: "lost"}


def test_it_follows_the_setting_for_the_interval(running, settings):
    settings.TRIAGE_HEARTBEAT_SECONDS = 60
    settings.TRIAGE_LOST_AFTER_HEARTBEATS = 10
    attempt = running(heartbeat_ago=300)
    services.liveness_sweep()
    assert state_of(attempt) == "ok"


def test_it_revives_a_lost_attempt_on_a_late_heartbeat(running):
    attempt = running(heartbeat_ago=3600)
    tasks.liveness_sweep_task()
    assert state_of(attempt) == "lost"
    Attempt.objects.filter(pk=attempt.pk).update(last_heartbeat_at=timezone.now())
    assert services.liveness_on_heartbeat(attempt_id=attempt.pk) is True
    row = AttemptLiveness.objects.get(attempt=attempt)
    assert row.state == "ok"
    assert row.revived_at is not None
    # The next sweep agrees.
    services.liveness_sweep()
    assert state_of(attempt) == "ok"


def test_it_revives_in_the_sweep_when_the_hook_missed_it(running):
    attempt = running(heartbeat_ago=3600)
    services.liveness_sweep()
    Attempt.objects.filter(pk=attempt.pk).update(last_heartbeat_at=timezone.now())
    services.liveness_sweep()
    row = AttemptLiveness.objects.get(attempt=attempt)
    assert row.state == "ok"
    assert row.revived_at is not None


def test_it_flags_an_attempt_hung_when_log_and_cpu_stop(running, settings):
    settings.TRIAGE_HUNG_AFTER_SECONDS = 600
    stuck = running(heartbeat_ago=10)
    busy = running(heartbeat_ago=10)
    start = timezone.now()
    services.liveness_sweep(now=start)
    Attempt.objects.filter(pk=busy.pk).update(cpu_s=500.0)  # CPU moves, log does not
    services.liveness_sweep(now=start + dt.timedelta(seconds=300))
    later = start + dt.timedelta(seconds=700)
    Attempt.objects.filter(pk__in=[stuck.pk, busy.pk]).update(last_heartbeat_at=later)
    counts = services.liveness_sweep(now=later)
    assert state_of(stuck) == "hung"
    assert state_of(busy) == "ok"
    assert counts["hung"] == 1


def test_it_clears_hung_when_the_log_moves_again(running, settings):
    settings.TRIAGE_HUNG_AFTER_SECONDS = 600
    stuck = running(heartbeat_ago=10)
    start = timezone.now()
    services.liveness_sweep(now=start)
    later = start + dt.timedelta(seconds=700)
    Attempt.objects.filter(pk=stuck.pk).update(last_heartbeat_at=later)  # beats, no progress
    services.liveness_sweep(now=later)
    assert state_of(stuck) == "hung"
    # A heartbeat alone proves nothing; one with new log bytes does.
    assert services.liveness_on_heartbeat(attempt_id=stuck.pk) is False
    Attempt.objects.filter(pk=stuck.pk).update(log_bytes=5000)
    assert services.liveness_on_heartbeat(attempt_id=stuck.pk) is True
    assert state_of(stuck) == "ok"


def test_it_counts_lost_and_hung_attempts_of_a_campaign(running, campaign, settings):
    settings.TRIAGE_HUNG_AFTER_SECONDS = 600
    running(heartbeat_ago=3600)
    running(heartbeat_ago=3600)
    running(heartbeat_ago=5)
    start = timezone.now()
    services.liveness_sweep(now=start)
    assert selectors.campaign_liveness_counts(campaign_id=campaign.pk) == {"lost": 2, "hung": 0}
    ended = Attempt.objects.filter(status=Attempt.Status.RUNNING).first()
    Attempt.objects.filter(pk=ended.pk).update(status=Attempt.Status.FAILED)
    counts = selectors.campaign_liveness_counts(campaign_id=campaign.pk)
    assert counts["lost"] + counts["hung"] <= 2


def test_it_makes_lost_attempts_retryable_through_the_actions_hook(running):
    from prodmon.actions import hooks

    attempt = running(heartbeat_ago=3600)
    services.liveness_sweep()
    assert hooks.attempt_liveness(attempt_ids=[attempt.pk]) == {attempt.pk: "lost"}


def test_it_notifies_subscribers_once_per_campaign_of_newly_hung_attempts(
    running, settings, experiment, campaign, mailoutbox, django_capture_on_commit_callbacks
):
    from prodmon.models import Role
    from prodmon.progress import services as progress
    from tests.factories import MembershipFactory, UserFactory

    user = UserFactory(username="shifter.sam", email="sam@example.org")
    MembershipFactory(user=user, experiment=experiment, role=Role.SHIFTER)
    progress.notification_subscription_set(
        user=user, experiment=experiment, kinds=["hung_attempts"], by_email=True
    )
    settings.TRIAGE_HUNG_AFTER_SECONDS = 600
    stuck = [running(heartbeat_ago=10) for _ in range(2)]
    start = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        services.liveness_sweep(now=start)
    assert mailoutbox == []  # nothing hung yet
    later = start + dt.timedelta(seconds=700)
    Attempt.objects.filter(pk__in=[a.pk for a in stuck]).update(last_heartbeat_at=later)
    with django_capture_on_commit_callbacks(execute=True):
        services.liveness_sweep(now=later)
    assert [m.subject for m in mailoutbox] == [
        f"[prodmon {experiment.name}] 2 attempts of {campaign.name} flagged as hung"
    ]
    assert f"?campaign={campaign.pk}&attention=hung" in mailoutbox[0].body
    # Still hung at the next sweep: no second notification.
    with django_capture_on_commit_callbacks(execute=True):
        services.liveness_sweep(now=later + dt.timedelta(seconds=60))
    assert len(mailoutbox) == 1
