"""The campaign page's "needs attention" counts, the filtered job table, the
/attention/ page and an attempt page in headless Chromium, from events sent
through the ingest API. Screenshots land in shots/ for a human to look at."""

import datetime as dt
import os
import uuid

import pytest
from django.utils import timezone

from prodmon.models import Attempt
from tests.factories import JobFactory
from tests.health.conftest import beat
from tests.health.test_browser import ARGS, SHOTS
from triage import services

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.django_db(transaction=True)]
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"


@pytest.fixture
def page(chromium_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        yield context
        browser.close()


def test_it_walks_from_the_campaign_counts_to_the_filtered_jobs(
    live_server, page, stream, send, people, client
):
    # One more lost attempt with an event range left undone, for the attempt page.
    JobFactory(stage=stream, key="raw_0777.root", events_expected=2000)
    uid = uuid.uuid4()
    t0 = timezone.now() - dt.timedelta(hours=1)
    send("start", "raw_0777.root", uid, host="wn07.fnal.gov", time=t0.isoformat())
    beat(send, "raw_0777.root", uid, events=1500, at=t0 + dt.timedelta(minutes=1))
    services.liveness_sweep()

    client.force_login(people["viewer"])
    cookie = client.cookies["sessionid"]
    page.add_cookies([{"name": "sessionid", "value": cookie.value, "url": live_server.url}])
    tab = page.new_page()
    tab.goto(live_server.url + stream.campaign.get_absolute_url())
    counts = tab.locator("#attention")
    assert counts.locator('[data-count="lost"] b').inner_text() == "2"
    assert counts.locator('[data-count="duplicate"] b').inner_text() == "1"
    SHOTS.mkdir(exist_ok=True)
    counts.screenshot(path=str(SHOTS / "campaign-attention.png"))
    tab.screenshot(path=str(SHOTS / "campaign-detail.png"), full_page=True)

    counts.locator('[data-count="lost"]').click()
    tab.wait_for_selector("table.jobs")
    keys = tab.locator("table.jobs td.key").all_inner_texts()
    assert sorted(k.strip() for k in keys) == ["lost.root", "raw_0777.root"]
    assert tab.locator("select[name=attention]").input_value() == "lost"
    tab.screenshot(path=str(SHOTS / "jobs-attention-lost.png"), full_page=True)

    tab.goto(live_server.url + f"/jobs/?campaign={stream.campaign.pk}&attention=duplicate")
    assert tab.locator("table.jobs .flag").first.inner_text() == "duplicate"

    tab.goto(live_server.url + f"/attention/?campaign={stream.campaign.pk}")
    row = tab.locator(f'tr[data-attempt="{uid}"]')
    assert "500" in row.locator(".remainder").inner_text()
    assert "1501-2000" in row.locator(".remainder").inner_text()
    tab.screenshot(path=str(SHOTS / "attention.png"), full_page=True)

    tab.goto(live_server.url + Attempt.objects.get(uid=uid).get_absolute_url())
    assert "events 1501-2000" in tab.locator("#attention").inner_text()
    tab.screenshot(path=str(SHOTS / "attempt-lost.png"), full_page=True)
