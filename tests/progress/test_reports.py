"""Efficiency reports: numbers by campaign, stage, site and week, wasted time
per error class, and the CSV and JSON exports."""

import csv
import datetime as dt
import io

import pytest
from django.urls import reverse

from prodmon.models import Attempt, Job
from prodmon.progress import reports
from tests.factories import AttemptFactory, CampaignFactory, JobFactory, StageFactory
from tests.progress.conftest import node

pytestmark = pytest.mark.django_db

MON = dt.datetime(2025, 3, 3, tzinfo=dt.UTC)  # a Monday


def attempt(
    stage,
    status,
    *,
    wall,
    cpu,
    cores=1,
    site="FNAL",
    day=0,
    exit_code=None,
    signal=None,
    rss=None,
    out=None,
    duplicate=False,
):
    job = JobFactory(stage=stage)
    ended = MON + dt.timedelta(days=day, hours=12)
    return AttemptFactory(
        job=job,
        number=1,
        status=status,
        node=node(site),
        started_at=ended - dt.timedelta(seconds=wall),
        ended_at=ended,
        wall_s=wall,
        cpu_s=cpu,
        cores=cores,
        exit_code=0 if status == "succeeded" else exit_code,
        signal=signal,
        peak_rss_bytes=rss,
        output_bytes=out,
        is_duplicate_completion=duplicate,
    )


@pytest.fixture
def history(gen, reco):
    # gen at FNAL: two good (1 h each, 0.9 h and 0.7 h CPU), one failed (exit 65, 0.5 h).
    attempt(gen, "succeeded", wall=3600, cpu=3240, rss=1000, out=2000)
    attempt(gen, "succeeded", wall=3600, cpu=2520, rss=3000, out=4000)
    attempt(gen, "failed", wall=1800, cpu=1800, exit_code=65, rss=500)
    # reco at CERN on 4 cores, the next week: one good (2 h wall, 4 h CPU), one SIGKILL (1 h).
    attempt(reco, "succeeded", wall=7200, cpu=14400, cores=4, site="CERN", day=7, out=6000)
    attempt(reco, "failed", wall=3600, cpu=100, cores=4, site="CERN", day=7, signal=9)
    # A duplicate completion: good status, thrown away, wasted.
    attempt(reco, "succeeded", wall=600, cpu=600, site="CERN", day=8, duplicate=True)
    return gen, reco


def filters(experiment, **extra):
    return reports.ReportFilters(
        experiment_ids=frozenset({experiment.pk}),
        since=MON,
        until=MON + dt.timedelta(days=14),
        **extra,
    )


def test_it_computes_efficiency_by_stage(experiment, history):
    gen, reco = history
    report = reports.efficiency_report(filters=filters(experiment), by="stage")
    rows = {r.key: r for r in report.rows}
    g = rows[str(gen.pk)]
    assert (g.attempts, g.good, g.failed) == (3, 2, 1)
    assert g.cpu_efficiency == pytest.approx((3240 + 2520 + 1800) / (3600 + 3600 + 1800))
    assert g.success_rate == pytest.approx(2 / 3)
    assert g.wasted_hours == pytest.approx(0.5)
    assert g.rss_max_bytes == 3000
    assert g.rss_mean_bytes == pytest.approx(1500)
    assert g.output_bytes == 6000
    assert g.output_per_good_bytes == pytest.approx(3000)
    r = rows[str(reco.pk)]
    # CPU over wall x cores: (14400 + 100 + 600) / (7200*4 + 3600*4 + 600*1).
    assert r.cpu_efficiency == pytest.approx(15100 / 43800)
    assert (r.good, r.failed, r.duplicates) == (1, 1, 1)
    assert r.wasted_hours == pytest.approx(1.0 + 600 / 3600)
    assert report.total.attempts == 6


def test_it_groups_by_site_week_and_campaign(experiment, history):
    by_site = {
        r.label: r for r in reports.efficiency_report(filters=filters(experiment), by="site").rows
    }
    assert set(by_site) == {"FNAL", "CERN"}
    assert by_site["CERN"].attempts == 3
    assert by_site["FNAL"].url.endswith("site=FNAL")
    weeks = reports.efficiency_report(filters=filters(experiment), by="week").rows
    assert [w.key for w in weeks] == ["2025-03-03", "2025-03-10"]
    assert [w.attempts for w in weeks] == [3, 3]
    [campaign] = reports.efficiency_report(filters=filters(experiment), by="campaign").rows
    assert campaign.label == "dune/mc2025a"
    assert campaign.attempts == 6


def test_it_groups_wasted_time_by_exit_code_until_triage_classifies(experiment, history, settings):
    settings.PRODMON_REPORT_ERROR_GROUPING = "exit_code"
    report = reports.efficiency_report(filters=filters(experiment), by="stage")
    errors = {e.label: e for e in report.errors}
    assert errors["SIGKILL (9)"].wasted_hours == pytest.approx(1.0)
    assert errors["exit 65"].wasted_hours == pytest.approx(0.5)
    assert errors["duplicate completion"].attempts == 1
    assert [e.label for e in report.errors][0] == "SIGKILL (9)"  # most wasted first


def test_it_plugs_in_another_error_grouping(experiment, history, monkeypatch):
    class ByStatus:
        name = "status"

        def wasted(self, failed):
            return [
                reports.ErrorClassRow(label="anything", attempts=failed.count(), wasted_hours=1.0)
            ]

    monkeypatch.setattr(reports, "error_grouping", lambda: ByStatus())
    report = reports.efficiency_report(filters=filters(experiment), by="site")
    assert report.error_grouping == "status"
    assert report.errors[0].label == "anything"
    assert report.errors[0].attempts == 2


def test_it_exports_csv_with_the_right_numbers(client, member, experiment, history, settings):
    settings.PRODMON_REPORT_ERROR_GROUPING = "exit_code"
    gen, _ = history
    client.force_login(member)
    response = client.get(
        reverse("progress-report-export", args=["csv"]),
        {"by": "stage", "since": "2025-03-03", "until": "2025-03-16"},
    )
    assert response["Content-Type"] == "text/csv"
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    by_label = {r["stage"]: r for r in rows}
    g = by_label["mc2025a/gen"]
    assert int(g["attempts"]) == 3
    assert int(g["good"]) == 2
    assert int(g["failed"]) == 1
    assert float(g["cpu_efficiency"]) == pytest.approx(7560 / 9000, rel=1e-5)
    assert float(g["success_rate"]) == pytest.approx(2 / 3, rel=1e-5)
    assert float(g["wasted_wall_hours"]) == pytest.approx(0.5)
    assert float(g["wall_hours"]) == pytest.approx(2.5)
    assert int(g["output_bytes"]) == 6000
    assert by_label["total"]["attempts"] == "6"
    errors = client.get(
        reverse("progress-report-export", args=["errors.csv"]),
        {"since": "2025-03-03", "until": "2025-03-16"},
    )
    rows = list(csv.DictReader(io.StringIO(errors.content.decode())))
    assert {r["error_class"] for r in rows} >= {"exit 65", "SIGKILL (9)"}


def test_it_exports_json(client, member, experiment, history):
    client.force_login(member)
    data = client.get(
        reverse("progress-report-export", args=["json"]),
        {"by": "site", "since": "2025-03-03", "until": "2025-03-16"},
    ).json()
    assert data["by"] == "site"
    assert {r["label"] for r in data["rows"]} == {"FNAL", "CERN"}
    assert data["total"]["attempts"] == 6
    assert data["wasted_by_error_class"]


def test_it_scopes_reports_to_the_users_experiments(client, outsider, experiment, history):
    client.force_login(outsider)
    data = client.get(
        reverse("progress-report-export", args=["json"]),
        {"since": "2025-03-03", "until": "2025-03-16"},
    ).json()
    assert data["rows"] == []
    assert data["total"]["attempts"] == 0
    # Naming a foreign experiment is an invalid choice, not a way in.
    bad = client.get(
        reverse("progress-report-export", args=["json"]), {"experiment": experiment.pk}
    )
    assert bad.status_code == 400


def test_it_renders_the_report_page_with_charts(client, member, experiment, history):
    client.force_login(member)
    response = client.get(
        reverse("progress-reports"), {"by": "week", "since": "2025-03-03", "until": "2025-03-16"}
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="chart-efficiency"' in html
    assert 'id="chart-errors-data"' in html
    assert "week of 2025-03-03" in html
    charts = response.context["charts"]
    assert charts["efficiency"]["data"][0]["x"] == ["2025-03-03", "2025-03-10"]


def test_it_filters_a_report_by_campaign(experiment, history):
    other = StageFactory(campaign=CampaignFactory(experiment=experiment, name="other"))
    attempt(other, "failed", wall=100, cpu=10, exit_code=1)
    gen, _ = history
    report = reports.efficiency_report(
        filters=filters(experiment, campaign_id=gen.campaign_id), by="campaign"
    )
    assert [r.label for r in report.rows] == ["dune/mc2025a"]
    assert Job.objects.count() == 7
    assert Attempt.objects.count() == 7


def test_it_groups_wasted_time_by_triage_error_class(experiment, history, settings):
    from django.apps import apps

    try:
        error_class_model = apps.get_model("triage", "ErrorClass")
        classification_model = apps.get_model("triage", "AttemptClassification")
    except LookupError:
        pytest.skip("the triage app has no classification model yet")
    settings.PRODMON_REPORT_ERROR_GROUPING = "auto"
    gen, _ = history
    failed = Attempt.objects.get(job__stage=gen, status="failed")
    cls = error_class_model.objects.create(
        experiment=experiment, key="rule:test:fcl", source="rule", title="FHiCL config error"
    )
    classification_model.objects.create(
        attempt=failed,
        error_class=cls,
        source="rule",
        experiment=experiment,
        campaign=gen.campaign,
        stage=gen,
        seen_at=failed.ended_at,
        wall_s=failed.wall_s,
    )
    report = reports.efficiency_report(filters=filters(experiment), by="stage")
    errors = {e.label: e for e in report.errors}
    assert report.error_grouping == "error class (triage)"
    assert errors["FHiCL config error"].wasted_hours == pytest.approx(0.5)
    assert errors["unclassified: SIGKILL (9)"].attempts == 1
