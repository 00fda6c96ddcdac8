"""The campaign dashboard (server side): dependency picture, per-site counts
linked to the job table, chart data, plotly.js without a CDN, scoping."""

import datetime as dt
import gzip

import pytest
from django.urls import reverse
from django.utils import timezone

from prodmon.models import StageProgressSample
from tests.progress.conftest import timeline

pytestmark = pytest.mark.django_db


@pytest.fixture
def busy(gen, reco):
    now = timezone.now()
    timeline(gen, done=50, running=10, queued=40, now=now, site="FNAL")
    timeline(reco, done=20, running=5, now=now, site="CERN", rate_per_hour=5)
    timeline(reco, done=5, now=now - dt.timedelta(hours=30), site="RAL", prefix="old")
    return gen, reco


def test_it_shows_dependent_stages_with_their_percentages(client, member, busy):
    gen, reco = busy
    client.force_login(member)
    response = client.get(gen.campaign.get_absolute_url())
    levels = response.context["pipeline"]
    assert [[p.stage.name for p in level] for level in levels] == [["gen"], ["reco"]]
    html = response.content.decode()
    assert '<span class="node-pct">50%</span>' in html
    assert '<span class="node-pct">25%</span>' in html
    assert "waits on gen" in html


def test_it_counts_jobs_per_site_with_links(client, member, busy):
    gen, _ = busy
    client.force_login(member)
    response = client.get(gen.campaign.get_absolute_url())
    sites = {s.site: s for s in response.context["sites"]}
    assert sites["FNAL"].counts["succeeded"] == 50
    assert sites["FNAL"].counts["running"] == 10
    assert sites["CERN"].counts["running"] == 5
    assert sites["RAL"].total == 5
    assert sites[""].counts["queued"] == 40  # queued jobs have no attempt yet
    html = response.content.decode()
    campaign = gen.campaign.pk
    assert f'href="/jobs/?campaign={campaign}&amp;site=FNAL&amp;state=succeeded"' in html
    assert f'href="/jobs/?campaign={campaign}&amp;site=CERN"' in html
    # The link lands on the same jobs the count says.
    jobs = client.get(f"/jobs/?campaign={campaign}&site=FNAL&state=succeeded")
    assert jobs.context["table"].paginator.count == 50


def test_it_builds_the_charts_from_samples_and_attempt_ends(client, member, busy):
    gen, reco = busy
    now = timezone.now()
    for hours, done in ((3, 20), (2, 30), (1, 40)):
        StageProgressSample.objects.create(
            stage=gen, at=now - dt.timedelta(hours=hours), succeeded=done
        )
    client.force_login(member)
    charts = client.get(gen.campaign.get_absolute_url()).context["charts"]
    progress = {(t["meta"]["stage"], t["meta"]["kind"]): t for t in charts["progress"]["data"]}
    gen_line = progress[(gen.pk, "progress")]
    assert gen_line["y"] == [20.0, 30.0, 40.0, 50.0]  # samples, then now
    # reco has no samples: its curve comes from good attempts' end times.
    reco_line = progress[(reco.pk, "progress")]
    assert reco_line["y"][-1] == 25.0
    assert reco_line["y"][0] == 0.0
    assert (gen.pk, "projection") in progress
    assert progress[(gen.pk, "projection")]["y"][-1] == 95.0  # to the completion target
    good = {
        t["meta"].get("stage"): t
        for t in charts["throughput"]["data"]
        if t["meta"]["kind"] == "good"
    }
    assert sum(good[gen.pk]["y"]) == 50
    assert sum(good[reco.pk]["y"]) == 25  # 20 recent ones and 5 from 30 h ago
    assert charts["throughput"]["layout"]["yaxis"]["title"]["text"] == "attempts ended per hour"
    failed = [t for t in charts["throughput"]["data"] if t["meta"]["kind"] == "failed"]
    assert failed == [] or sum(failed[0]["y"]) == 0


def test_it_serves_plotly_from_the_installed_package(client):
    response = client.get(reverse("progress-plotly-js"), HTTP_ACCEPT_ENCODING="gzip")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/javascript"
    assert response["Content-Encoding"] == "gzip"
    assert "max-age=31536000" in response["Cache-Control"]
    body = gzip.decompress(response.content)
    assert b"plotly" in body[:2000].lower()
    assert len(body) > 1_000_000
    again = client.get(reverse("progress-plotly-js"), HTTP_IF_NONE_MATCH=response["ETag"])
    assert again.status_code == 304


def test_it_puts_no_cdn_on_the_page(client, member, busy):
    gen, _ = busy
    client.force_login(member)
    html = client.get(gen.campaign.get_absolute_url()).content.decode()
    assert "/progress/plotly.min.js?v=" in html
    assert "cdn" not in html.lower()


def test_it_shows_the_campaign_estimate_on_the_list(client, member, busy):
    client.force_login(member)
    response = client.get("/")
    [(campaign, stages, estimate)] = response.context["cards"]
    assert estimate is not None
    assert [eta.status for _, eta in stages] == ["estimated", "estimated"]
    assert "campaign done" in response.content.decode()


def test_it_hides_the_dashboard_from_outsiders_and_anonymous_users(client, outsider, busy):
    gen, _ = busy
    assert client.get(gen.campaign.get_absolute_url()).status_code == 302
    client.force_login(outsider)
    assert client.get(gen.campaign.get_absolute_url()).status_code == 404
    assert client.get(reverse("api-campaign-progress", args=[gen.campaign.pk])).status_code == 404
    assert "mc2025a" not in client.get("/").content.decode()
