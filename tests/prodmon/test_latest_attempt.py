"""Job.last_attempt / last_site / last_activity_at / last_update, kept by the
database triggers of prodmon.latest_attempt, and the job table's capped count."""

import datetime as dt
import threading
import uuid

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from prodmon import latest_attempt, services
from prodmon.models import Attempt, Job, Role
from prodmon.tables import CappedCountPaginator
from tests.factories import (
    AttemptFactory,
    JobFactory,
    MembershipFactory,
    NodeFactory,
    StageFactory,
    UserFactory,
)

T0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


def _job(pk) -> Job:
    return Job.objects.get(pk=pk)


@pytest.mark.django_db
def test_it_follows_the_highest_numbered_attempt_through_writes_and_deletes():
    fnal = NodeFactory(hostname="wn1.fnal.gov", site="FNAL")
    cern = NodeFactory(hostname="wn2.cern.ch", site="CERN")
    job = JobFactory()
    assert (_job(job.pk).last_attempt_id, _job(job.pk).last_site) == (None, "")

    first = AttemptFactory(job=job, number=1, node=fnal, started_at=T0)
    j = _job(job.pk)
    assert (j.last_attempt_id, j.last_site, j.last_activity_at) == (first.pk, "FNAL", T0)

    second = AttemptFactory(job=job, number=2, node=cern, started_at=T0 + dt.timedelta(hours=1))
    assert (_job(job.pk).last_attempt_id, _job(job.pk).last_site) == (second.pk, "CERN")

    # The older attempt ending late does not take the latest's place.
    first.ended_at = T0 + dt.timedelta(hours=3)
    first.save(update_fields=["ended_at"])
    j = _job(job.pk)
    assert (j.last_attempt_id, j.last_activity_at) == (second.pk, T0 + dt.timedelta(hours=1))

    # A heartbeat of the latest moves the activity, and the generated sort key.
    beat = T0 + dt.timedelta(hours=2)
    second.last_heartbeat_at = beat
    second.save(update_fields=["last_heartbeat_at"])
    j = _job(job.pk)
    assert j.last_activity_at == beat
    assert j.last_update == max(j.updated_at, beat)

    second.delete()
    j = _job(job.pk)
    assert (j.last_attempt_id, j.last_site, j.last_activity_at) == (
        first.pk,
        "FNAL",
        T0 + dt.timedelta(hours=3),
    )
    first.delete()
    j = _job(job.pk)
    assert (j.last_attempt_id, j.last_site, j.last_activity_at) == (None, "", None)


@pytest.mark.django_db
def test_the_ingest_services_keep_the_job_row_without_calling_anything(experiment):
    campaign = services.campaign_create(experiment=experiment, name="c1")
    services.stage_create(campaign=campaign, name="gen", expected_jobs=1)
    uids = [uuid.uuid4(), uuid.uuid4()]
    for number, (uid, host, site) in enumerate(
        [(uids[0], "a.x", "SITE_A"), (uids[1], "b.y", "SITE_B")], start=1
    ):
        with transaction.atomic():
            services.attempt_record_start(
                experiment=experiment,
                identity=services.AttemptIdentity(
                    campaign="c1", stage="gen", job="in.root", attempt=uid
                ),
                at=T0 + dt.timedelta(hours=number),
                hostname=host,
                site=site,
                cores=1,
            )
    job = Job.objects.get(key="in.root")
    latest = Attempt.objects.get(uid=uids[1])
    assert (job.last_attempt_id, job.last_site) == (latest.pk, "SITE_B")
    assert job.last_activity_at == latest.started_at


@pytest.mark.django_db
def test_backfill_recomputes_jobs_whose_columns_are_wrong():
    node = NodeFactory(hostname="wn9.example.org", site="RAL")
    job = JobFactory()
    AttemptFactory(job=job, number=1, node=node, started_at=T0)
    latest = AttemptFactory(job=job, number=2, node=node, started_at=T0 + dt.timedelta(hours=1))
    empty = JobFactory()
    Job.objects.update(last_attempt=None, last_site="wrong", last_activity_at=timezone.now())
    latest_attempt.backfill(connection)
    j = _job(job.pk)
    assert (j.last_attempt_id, j.last_site, j.last_activity_at) == (
        latest.pk,
        "RAL",
        T0 + dt.timedelta(hours=1),
    )
    # A job without attempts is left as it was: backfill only sets jobs that have some.
    assert _job(empty.pk).last_attempt_id is None


@pytest.mark.django_db
def test_the_job_table_counts_up_to_a_cap_and_says_so(client, experiment, monkeypatch):
    monkeypatch.setattr(CappedCountPaginator, "cap", 60)
    user = MembershipFactory(
        user=UserFactory(username="cap"), experiment=experiment, role=Role.VIEWER
    ).user
    stage = StageFactory(campaign__experiment=experiment)
    for i in range(65):
        JobFactory(stage=stage, key=f"job_{i:03d}")
    client.force_login(user)
    html = client.get("/jobs/?sort=key").content.decode()
    assert "60+ jobs" in html
    assert "1–50 of 60+" in html
    second = client.get("/jobs/?sort=key&page=2")
    assert len(second.context["table"].page.object_list) == 10
    # Under the cap the count is exact, with no "+".
    exact = client.get("/jobs/?key=job_00").content.decode()
    assert "10 jobs match" in exact
    # (Not a bare "10+": a timestamp on the page can read "…:10+00:00".)
    assert "10+ jobs" not in exact
    assert "of 10+" not in exact


@pytest.mark.django_db(transaction=True)
def test_a_heartbeat_does_not_wait_for_a_transaction_holding_the_job(require_postgres):
    """The heartbeat path locks the attempt alone; start and end lock the job
    first, then the attempt. The trigger must not make a heartbeat wait for the
    job row, or the two orders deadlock."""
    node = NodeFactory(hostname="wn5.example.org", site="BNL")
    job = JobFactory()
    attempt = AttemptFactory(job=job, number=1, node=node, started_at=T0)
    holding = threading.Event()
    release = threading.Event()

    def hold_job_row():
        try:
            with transaction.atomic():
                Job.objects.select_for_update().get(pk=job.pk)
                holding.set()
                release.wait(10)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_job_row)
    holder.start()
    assert holding.wait(10)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '2s'")
        beat = T0 + dt.timedelta(minutes=30)
        Attempt.objects.filter(pk=attempt.pk).update(last_heartbeat_at=beat)  # must not block
        # The job was locked: that heartbeat's time was not copied...
        assert _job(job.pk).last_activity_at == T0
    finally:
        release.set()
        holder.join(10)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = 0")
    # ...and the next one, with the job free, is.
    later = T0 + dt.timedelta(minutes=60)
    Attempt.objects.filter(pk=attempt.pk).update(last_heartbeat_at=later)
    assert _job(job.pk).last_activity_at == later


@pytest.mark.django_db
def test_campaign_page_aggregates_are_cached_for_the_configured_time(client, experiment, settings):
    from django.core.cache import cache

    settings.PRODMON_PAGE_CACHE_SECONDS = 60
    cache.clear()
    user = MembershipFactory(
        user=UserFactory(username="fresh"), experiment=experiment, role=Role.VIEWER
    ).user
    stage = StageFactory(campaign__experiment=experiment, expected_jobs=4)
    JobFactory(stage=stage, state=Job.State.SUCCEEDED)
    client.force_login(user)
    url = stage.campaign.get_absolute_url()
    first = client.get(url)
    assert "may be up to 60 s old" in first.content.decode()
    [progress] = [p for p, _ in first.context["stages"]]
    assert progress.counts["succeeded"] == 1
    JobFactory(stage=stage, state=Job.State.SUCCEEDED)
    [progress] = [p for p, _ in client.get(url).context["stages"]]
    assert progress.counts["succeeded"] == 1  # within the minute: the cached count
    cache.clear()
    [progress] = [p for p, _ in client.get(url).context["stages"]]
    assert progress.counts["succeeded"] == 2
    settings.PRODMON_PAGE_CACHE_SECONDS = 0
    assert "may be up to" not in client.get(url).content.decode()
