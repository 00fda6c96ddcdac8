"""Lost, hung and duplicate attempts and partial failures where people look:
the event range a lost attempt leaves undone, the duplicate-completion list,
the job table's "needs attention" filter, the campaign page's counts and the
/attention/ page. Events go through the real ingest API."""

import datetime as dt
import uuid

import pytest
from django.urls import reverse
from django.utils import timezone

from prodmon.models import Attempt, Job
from tests.factories import CampaignFactory, JobFactory
from tests.health.conftest import beat, client_for, complete
from triage import selectors, services
from triage.models import AttemptLiveness

pytestmark = pytest.mark.django_db


def test_it_knows_the_event_range_a_lost_attempt_leaves_undone(send, reco, settings):
    settings.TRIAGE_HEARTBEAT_SECONDS = 60
    job = JobFactory(stage=reco, key="raw_0042.root", events_expected=5000)
    uid = uuid.uuid4()
    t0 = timezone.now() - dt.timedelta(minutes=30)
    send("start", job.key, uid, host="wn17.fnal.gov", site="FNAL", time=t0.isoformat())
    beat(send, job.key, uid, events=1200, at=t0 + dt.timedelta(minutes=1))
    beat(send, job.key, uid, events=1733, at=t0 + dt.timedelta(minutes=2))
    # Then silence: 28 minutes is far more than three 60 s heartbeat periods.
    assert services.liveness_sweep()["lost"] == 1
    (row,) = selectors.liveness_list(experiment_ids={reco.campaign.experiment_id})
    assert row.state == "lost"
    assert (row.events_done, row.events_expected) == (1733, 5000)
    assert row.events_remaining == 3267
    assert row.remaining_range == "1734-5000"


def test_it_revives_a_lost_attempt_with_a_late_heartbeat_and_shrinks_the_remainder(
    send, reco, settings
):
    settings.TRIAGE_HEARTBEAT_SECONDS = 60
    job = JobFactory(stage=reco, key="raw_0043.root", events_expected=100)
    uid = uuid.uuid4()
    t0 = timezone.now() - dt.timedelta(minutes=30)
    send("start", job.key, uid, host="wn17.fnal.gov", time=t0.isoformat())
    beat(send, job.key, uid, events=10, at=t0 + dt.timedelta(minutes=1))
    services.liveness_sweep()
    assert AttemptLiveness.objects.get(attempt__uid=uid).state == "lost"
    # The late heartbeat goes through ingest's own hook (liveness_on_heartbeat).
    beat(send, job.key, uid, events=60, at=timezone.now())
    live = AttemptLiveness.objects.get(attempt__uid=uid)
    assert live.state == "ok"
    assert live.revived_at is not None
    assert selectors.liveness_list(experiment_ids={reco.campaign.experiment_id}) == []
    row = selectors.attempt_liveness_row(attempt=Attempt.objects.get(uid=uid))
    assert row.remaining_range == "61-100"


def test_it_says_the_remainder_is_unknown_without_events_expected(send, reco):
    job = JobFactory(stage=reco, key="raw_0044.root")
    uid = uuid.uuid4()
    send("start", job.key, uid, host="wn17.fnal.gov", time="2020-01-01T00:00:00Z")
    services.liveness_sweep()
    (row,) = selectors.liveness_list(experiment_ids={reco.campaign.experiment_id})
    assert row.events_remaining is None
    assert row.remaining_range == ""


def test_it_lists_duplicate_completions_with_the_chosen_attempt(send, reco):
    JobFactory(stage=reco, key="raw_0100.root")
    first = complete(send, "raw_0100.root", host="wn01.fnal.gov")
    failed = complete(send, "raw_0100.root", exit_code=1)
    second = complete(send, "raw_0100.root", host="wn02.fnal.gov")
    third = complete(send, "raw_0100.root", host="wn03.fnal.gov")
    complete(send, "raw_0101.root")  # a job that completed once
    (row,) = selectors.duplicate_completion_list(experiment_ids={reco.campaign.experiment_id})
    assert row.job.key == "raw_0100.root"
    assert row.chosen.pk == first.pk  # the first good one
    assert [a.pk for a in row.attempts] == [first.pk, second.pk, third.pk]
    assert [a.pk for a in row.duplicates] == [second.pk, third.pk]
    assert failed.pk not in [a.pk for a in row.attempts]
    counts = selectors.campaign_attention_counts(campaign_id=reco.campaign_id)
    assert (counts["duplicate_jobs"], counts["duplicate_completions"]) == (1, 2)


def test_it_counts_one_completion_for_progress_and_outputs(send, reco):
    from prodmon.progress.completeness import stage_completeness
    from prodmon.progress.services import stage_inputs_declare
    from prodmon.selectors import stage_job_counts

    stage_inputs_declare(stage=reco, items=["raw_0200.root"], source="test", actor=None)
    JobFactory(stage=reco, key="raw_0200.root")
    for host in ("wn01.fnal.gov", "wn02.fnal.gov"):
        complete(
            send,
            "raw_0200.root",
            host=host,
            outputs=[{"name": f"reco_{host[:4]}.root", "size": 100, "parents": ["raw_0200.root"]}],
        )
    assert stage_job_counts(stage_ids=[reco.pk])[reco.pk]["succeeded"] == 1
    job = Job.objects.get(key="raw_0200.root")
    good = Attempt.objects.filter(job=job, is_duplicate_completion=False, status="succeeded")
    assert good.count() == 1
    assert job.good_attempt_id == good.get().pk
    report = stage_completeness(stage_id=reco.pk)
    assert (report.expected, report.covered, report.missing) == (1, 1, [])
    # Both runs named the input, so a merge is warned; only one counts.
    assert [d.attempts for d in report.duplicates] == [2]


def keys_for(client, **params) -> set[str]:
    page = client.get(reverse("job-list"), params)
    assert page.status_code == 200
    table = page.context["table"]
    return {row.record.key for row in table.paginated_rows}


def test_it_filters_the_job_table_by_what_needs_attention(stream, people):
    viewer = client_for(people["viewer"])
    campaign = stream.campaign.pk
    assert keys_for(viewer, campaign=campaign, attention="lost") == {"lost.root"}
    assert keys_for(viewer, campaign=campaign, attention="hung") == {"hung.root"}
    assert keys_for(viewer, campaign=campaign, attention="duplicate") == {"dup.root"}
    assert keys_for(viewer, campaign=campaign, attention="job-failed") == {"skim.root"}
    assert keys_for(viewer, campaign=campaign, attention="ended-early") == set()
    assert len(keys_for(viewer, campaign=campaign)) == 5


def test_it_rejects_an_unknown_attention_value(stream, people):
    page = client_for(people["viewer"]).get(reverse("job-list"), {"attention": "zombie"})
    assert page.status_code == 200
    assert "zombie is not one of the available choices" in page.content.decode()
    assert page.context["table"].paginator.count == 0


def test_it_hides_other_experiments_from_the_filter(stream, people):
    outsider = client_for(people["outsider"])
    assert keys_for(outsider, attention="lost") == set()


def test_it_shows_counts_on_the_campaign_page_linking_to_the_table(stream, people):
    page = client_for(people["viewer"]).get(stream.campaign.get_absolute_url())
    assert page.status_code == 200
    html = page.content.decode()
    campaign = stream.campaign.pk
    for kind, n in (("lost", 1), ("hung", 1), ("duplicate", 1), ("job-failed", 1)):
        link = (
            f'data-count="{kind}" href="/jobs/?campaign={campaign}&amp;attention={kind}"><b>{n}</b>'
        )
        assert link in html, kind
    assert f"/attention/?campaign={campaign}" in html


def test_it_shows_the_attention_page(stream, people):
    page = client_for(people["viewer"]).get(
        reverse("health-attention"), {"campaign": stream.campaign.pk}
    )
    assert page.status_code == 200
    html = page.content.decode()
    assert "lost.root" in html
    assert "hung.root" in html
    assert "dup.root" in html
    assert "skim.root" in html
    assert "fine.root" not in html
    assert 'id="n-liveness">2<' in html
    assert 'id="n-duplicates">1<' in html


def test_it_answers_bad_campaign_ids_clearly(stream, people):
    viewer = client_for(people["viewer"])
    bad = viewer.get(reverse("health-attention"), {"campaign": "mc2026"})
    assert bad.status_code == 400
    assert "campaign must be a campaign id" in bad.content.decode()
    other = CampaignFactory(name="theirs")
    assert viewer.get(reverse("health-attention"), {"campaign": other.pk}).status_code == 404


def test_it_requires_a_login_for_the_attention_page(client):
    assert client.get(reverse("health-attention")).status_code == 302


def test_it_escapes_untrusted_job_keys(send, reco, people):
    key = "<script>alert(1)</script>.root"
    JobFactory(stage=reco, key=key)
    complete(send, key)
    complete(send, key)
    html = client_for(people["viewer"]).get(reverse("health-attention")).content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.root" in html


def test_it_shows_the_remainder_on_the_attempt_page(send, reco, people, settings):
    settings.TRIAGE_HEARTBEAT_SECONDS = 60
    job = JobFactory(stage=reco, key="raw_0300.root", events_expected=800)
    uid = uuid.uuid4()
    t0 = timezone.now() - dt.timedelta(minutes=20)
    send("start", job.key, uid, host="wn09.fnal.gov", time=t0.isoformat())
    beat(send, job.key, uid, events=300, at=t0 + dt.timedelta(seconds=30))
    services.liveness_sweep()
    attempt = Attempt.objects.get(uid=uid)
    html = client_for(people["viewer"]).get(attempt.get_absolute_url()).content.decode()
    assert "500 events not processed (events 301-800)" in html


def test_it_shows_lost_attempts_and_partial_failures_on_the_job_page(stream, people):
    viewer = client_for(people["viewer"])
    lost = Job.objects.get(key="lost.root")
    html = viewer.get(lost.get_absolute_url()).content.decode()
    assert "100 events not processed (events 1-100)" in html
    skim = Job.objects.get(key="skim.root")
    html = viewer.get(skim.get_absolute_url()).content.decode()
    assert 'data-kind="job-failed"' in html
    assert "none of the 2 expected outputs appeared" in html
    fine = Job.objects.get(key="fine.root")
    assert 'id="attention"' not in viewer.get(fine.get_absolute_url()).content.decode()
