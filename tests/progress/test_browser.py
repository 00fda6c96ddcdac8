"""The progress pages in a real browser (Playwright + Debian's Chromium against
the live server): bars, estimates and plotly charts with the right numbers.
Screenshots land in shots/progress-*.png."""

import datetime as dt
import os
from pathlib import Path

import pytest
from django.utils import timezone

from prodmon import services
from prodmon.models import Attempt, InputSnapshot, Job, Role, StageProgressSample
from prodmon.progress import services as progress_services
from tests.factories import (
    AttemptFactory,
    CampaignFactory,
    JobFactory,
    MembershipFactory,
    UserFactory,
)
from tests.progress.conftest import output, timeline

# Playwright's sync API runs an event loop in this thread; the test's own ORM
# calls are still plain synchronous code.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

pytestmark = [pytest.mark.browser, pytest.mark.services]

SHOTS = Path(__file__).resolve().parents[2] / "shots"
PASSWORD = "pw-for-tests"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def page(chromium_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        page = context.new_page()
        page.set_default_timeout(15_000)
        yield page
        context.close()
        browser.close()


def shot(page, name):
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"progress-{name}.png"), full_page=True)


def login(page, base, path, username):
    page.goto(base + path)
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + path)


@pytest.fixture
def production(transactional_db, experiment, other_experiment):
    """A campaign in flight: gen half done, sim behind it, merge waiting."""
    now = timezone.now()
    user = UserFactory(username="pm.paula", email="paula@example.org")
    MembershipFactory(user=user, experiment=experiment, role=Role.MANAGER)
    campaign = CampaignFactory(experiment=experiment, name="mc2025b", title="MC production 2025b")
    gen = services.stage_create(
        campaign=campaign, name="gen", order=1, job_type="generation", expected_jobs=200
    )
    sim = services.stage_create(
        campaign=campaign,
        name="sim",
        order=2,
        job_type="simulation",
        expected_jobs=200,
        depends_on=[gen],
    )
    merge = services.stage_create(
        campaign=campaign,
        name="merge",
        order=3,
        job_type="merge",
        expected_jobs=20,
        depends_on=[sim],
    )
    # gen: 100 good over the last 10 h, 20 running, some failures along the way.
    timeline(
        gen,
        done=100,
        running=20,
        queued=70,
        now=now,
        fail_every=10,
        site="FNAL",
        peak_rss_bytes=1800 * 1024**2,
        disk_bytes=3 * 1024**3,
        cpu_s=2900.0,
    )
    for i in range(10):
        JobFactory(stage=gen, key=f"gen_failed_{i}", state=Job.State.FAILED, attempt_count=1)
    timeline(
        sim,
        done=40,
        running=10,
        now=now,
        rate_per_hour=5,
        wall_h=2.0,
        site="CERN",
        cpu_s=6500.0,
        output_bytes=2 * 1024**3,
    )
    for hours in range(10, 0, -1):
        StageProgressSample.objects.create(
            stage=gen, at=now - dt.timedelta(hours=hours), succeeded=10 * (10 - hours)
        )
    # sim declares its inputs: gen's outputs.
    names = [f"gen_run7_sr{i:03d}.root" for i in range(1, 11)]
    progress_services.stage_inputs_declare(
        stage=sim, items=names, source=InputSnapshot.Source.API, actor=None, actor_label="token"
    )
    good = list(Attempt.objects.filter(job__stage=sim, status="succeeded").order_by("pk")[:8])
    for i, attempt in enumerate(good[:7]):
        output(attempt, f"sim_{i}.root", [names[i]])
    output(good[7], "sim_dup.root", [names[0]])
    oom = AttemptFactory(
        job=JobFactory(stage=sim, key="sim_oom", state=Job.State.FAILED),
        number=1,
        status="failed",
        exit_code=137,
        peak_rss_bytes=2600 * 1024**2,
        ended_at=now - dt.timedelta(hours=1),
        started_at=now - dt.timedelta(hours=2),
    )
    CampaignFactory(experiment=other_experiment, name="secret-campaign")
    return {"user": user, "campaign": campaign, "gen": gen, "sim": sim, "merge": merge, "oom": oom}


def test_it_draws_the_dashboard_with_the_right_numbers(live_server, page, production):
    campaign, gen, sim = production["campaign"], production["gen"], production["sim"]
    login(page, live_server.url, campaign.get_absolute_url(), "pm.paula")
    page.wait_for_function("() => document.querySelectorAll('div.chart[data-drawn]').length === 2")

    # Bars and counts: gen has 100 succeeded, 10 failed, 20 running, 70 queued of 200.
    row = page.locator(f"#stage-{gen.pk}")
    assert row.locator("a.cnt[data-state=succeeded]").inner_text().strip() == "100 succeeded"
    assert row.locator("a.cnt[data-state=failed]").inner_text().strip() == "10 failed"
    assert row.locator(".pct").inner_text().strip() == "50.0%"
    widths = row.locator(".bar .seg").evaluate_all("els => els.map(e => e.style.width)")
    assert widths[:4] == ["50%", "5%", "10%", "35%"]
    assert row.locator(".eta.known").count() == 1
    assert page.locator(f"#stage-{production['merge'].pk} .eta.unknown").count() == 1
    pipeline = page.locator("ol.pipeline .node").all_inner_texts()
    assert [t.split()[:2] for t in pipeline] == [["gen", "50%"], ["sim", "20%"], ["merge", "0%"]]

    # The progress chart's traces hold the samples and today's value.
    traces = page.evaluate(
        """() => document.getElementById('chart-progress').data.map(
            t => ({name: t.name, kind: t.meta.kind, stage: t.meta.stage, y: t.y}))"""
    )
    gen_line = next(t for t in traces if t["stage"] == gen.pk and t["kind"] == "progress")
    assert gen_line["y"] == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50]
    assert any(t["stage"] == gen.pk and t["kind"] == "projection" for t in traces)
    throughput = page.evaluate(
        """() => document.getElementById('chart-throughput').data.map(
            t => ({kind: t.meta.kind, stage: t.meta.stage || null,
                   total: t.y.reduce((a, b) => a + b, 0)}))"""
    )
    good = {t["stage"]: t["total"] for t in throughput if t["kind"] == "good"}
    assert good == {gen.pk: 100, sim.pk: 40}
    failed = next(t["total"] for t in throughput if t["kind"] == "failed")
    # gen's retried attempts (every 10th of 100 but the first) and sim's memory kill.
    assert failed == 9 + 1
    assert (
        page.locator("#site-counts tr[data-site=FNAL] a[data-state=succeeded]").inner_text()
        == "100"
    )
    assert "secret-campaign" not in page.content()
    shot(page, "dashboard")

    page.goto(live_server.url + "/")
    card = page.locator(f"#campaign-{campaign.pk}")
    assert card.locator(f"#stage-{gen.pk} .eta.known").count() == 1
    assert "campaign" in card.locator(".campaign-eta").inner_text()
    shot(page, "campaigns")
    page.goto(live_server.url + campaign.get_absolute_url())

    # From the stage row to the stage page: completeness and resources.
    page.locator(f"#stage-{sim.pk} a", has_text="details").click()
    page.wait_for_url(f"{live_server.url}/progress/stages/{sim.pk}/")
    assert page.locator("#c-expected").inner_text() == "10"
    assert page.locator("#c-missing").inner_text() == "3"
    assert page.locator("#c-duplicates").inner_text() == "1"
    assert page.locator("#memory-kills tbody tr").count() == 1
    assert page.locator("#declare textarea").count() == 1  # a manager may declare
    shot(page, "stage")


def test_it_draws_the_efficiency_report(live_server, page, production):
    login(page, live_server.url, "/progress/reports/?by=site", "pm.paula")
    page.wait_for_function("() => document.querySelectorAll('div.chart[data-drawn]').length === 3")
    rows = page.locator("#report-table tbody tr[data-key]")
    assert sorted(rows.evaluate_all("els => els.map(e => e.dataset.key)")) == ["CERN", "FNAL"]
    bars = page.evaluate(
        "() => document.getElementById('chart-efficiency').data.map(t => ({name: t.name, x: t.x}))"
    )
    assert {b["name"] for b in bars} == {"CPU efficiency", "success rate"}
    assert sorted(bars[0]["x"]) == ["CERN", "FNAL"]
    errors = page.evaluate("() => document.getElementById('chart-errors').data[0].y")
    assert any("137" in label for label in errors)
    cpu = page.evaluate(
        "() => document.getElementById('chart-efficiency').data"
        ".find(t => t.name === 'CPU efficiency')"
    )
    by_site = dict(zip(cpu["x"], cpu["y"], strict=True))
    assert by_site["CERN"] == pytest.approx(100 * 6500 / 7200, abs=0.01)
    shot(page, "report")

    page.goto(live_server.url + "/progress/estimate/?job_type=generation&inputs=500")
    assert page.locator("#estimate-result").get_attribute("data-status") == "estimated"
    shot(page, "estimate")
    page.goto(live_server.url + "/progress/notifications/")
    page.check("#subs-dune input[value=stage_done]")
    page.click("#subs-dune button[type=submit]")
    page.wait_for_load_state()
    assert "Saved your notifications for dune." in page.content()
    shot(page, "notifications")
