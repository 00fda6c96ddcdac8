"""Triage tells subscribers about new error classes and black-hole nodes."""

import uuid

import pytest
from django.db import transaction
from django.utils import timezone

from prodmon import services
from prodmon.models import Role
from prodmon.models.progress import Notification, NotificationSubscription
from tests.factories import CampaignFactory, MembershipFactory, StageFactory
from triage import services as triage_services

pytestmark = pytest.mark.django_db(transaction=True)


def _subscribe(experiment, kinds):
    user = MembershipFactory(experiment=experiment, role=Role.SHIFTER).user
    user.email = f"{user.username}@example.org"
    user.save(update_fields=["email"])
    NotificationSubscription.objects.create(user=user, experiment=experiment, kinds=kinds)
    return user


def _fail(experiment, job, exit_code):
    identity = services.AttemptIdentity(campaign="mc", stage="gen", job=job, attempt=uuid.uuid4())
    # The ingest path always runs this in a transaction (row locks).
    with transaction.atomic():
        attempt, _ = services.attempt_record_end(
            experiment=experiment,
            identity=identity,
            at=timezone.now(),
            exit_code=exit_code,
            signal=None,
            metrics=services.Metrics(),
        )
    triage_services.attempt_classify(attempt_id=attempt.pk)
    return attempt


def test_it_notifies_once_when_a_new_error_class_appears(experiment):
    StageFactory(campaign=CampaignFactory(experiment=experiment, name="mc"), name="gen")
    user = _subscribe(experiment, ["new_error_class"])
    _fail(experiment, "a.root", 65)
    _fail(experiment, "b.root", 65)  # same class: no second notification
    rows = Notification.objects.filter(subscription__user=user, kind="new_error_class")
    assert rows.count() >= 1
    assert len({n.dedup_key for n in rows}) == 1
    assert "New error class" in rows.first().subject


def test_it_does_not_notify_users_who_did_not_ask(experiment):
    StageFactory(campaign=CampaignFactory(experiment=experiment, name="mc"), name="gen")
    user = _subscribe(experiment, ["stage_done"])
    _fail(experiment, "a.root", 65)
    assert not Notification.objects.filter(subscription__user=user, kind="new_error_class").exists()
