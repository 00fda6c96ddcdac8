"""The selectors the action layer reads: failure classes of jobs, jobs of a class."""

import uuid

import pytest
from django.utils import timezone

from prodmon import services
from prodmon.actions import hooks
from tests.factories import CampaignFactory, StageFactory
from triage import selectors
from triage.models import AttemptClassification

pytestmark = pytest.mark.django_db


def _fail(experiment, job, exit_code, log=""):
    identity = services.AttemptIdentity(campaign="mc", stage="gen", job=job, attempt=uuid.uuid4())
    attempt, _ = services.attempt_record_end(
        experiment=experiment,
        identity=identity,
        at=timezone.now(),
        exit_code=exit_code,
        signal=None,
        metrics=services.Metrics(),
    )
    from triage import services as triage_services

    triage_services.attempt_classify(attempt_id=attempt.pk)
    return attempt


def test_it_gives_each_job_the_class_of_its_latest_failure(experiment):
    StageFactory(campaign=CampaignFactory(experiment=experiment, name="mc"), name="gen")
    first = _fail(experiment, "a.root", 65)
    latest = _fail(experiment, "a.root", 137)
    other = _fail(experiment, "b.root", 65)
    classes = selectors.job_failure_classes([first.job_id, other.job_id])
    latest_class = AttemptClassification.objects.get(attempt=latest).error_class
    assert classes[first.job_id]["name"] == latest_class.title
    assert classes[first.job_id]["transient"] == latest_class.transient
    assert set(classes) == {first.job_id, other.job_id}
    # The action layer sees it through its hook.
    assert hooks.failure_classes(job_ids=[first.job_id])[first.job_id]["name"] == (
        latest_class.title
    )


def test_it_finds_the_jobs_whose_latest_failure_is_in_a_class(experiment, other_experiment):
    StageFactory(campaign=CampaignFactory(experiment=experiment, name="mc"), name="gen")
    a = _fail(experiment, "a.root", 65)
    b = _fail(experiment, "b.root", 65)
    _fail(experiment, "b.root", 137)  # b moved on to another class
    klass = AttemptClassification.objects.get(attempt=a).error_class
    assert selectors.error_class_job_ids(str(klass.pk), {experiment.pk}) == {a.job_id}
    assert selectors.error_class_job_ids(klass.key, {experiment.pk}) == {a.job_id}
    assert selectors.error_class_job_ids(str(klass.pk), {other_experiment.pk}) == set()
    assert b.job_id not in selectors.error_class_job_ids(klass.key, {experiment.pk})


def test_the_job_table_filters_by_error_class(experiment, client):
    from prodmon.models import Role
    from tests.factories import MembershipFactory

    StageFactory(campaign=CampaignFactory(experiment=experiment, name="mc"), name="gen")
    art = _fail(experiment, "art.root", 65)
    _fail(experiment, "kill.root", 137)
    klass = AttemptClassification.objects.get(attempt=art).error_class
    client.force_login(MembershipFactory(experiment=experiment, role=Role.VIEWER).user)
    body = client.get(f"/jobs/?error_class={klass.pk}").content.decode()
    assert "art.root" in body
    assert "kill.root" not in body
    # The class page links to exactly that filter.
    page = client.get(f"/errors/{klass.pk}/").content.decode()
    assert f"error_class={klass.pk}" in page
