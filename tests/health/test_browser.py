"""/nodes/ in headless Chromium, with nodes judged by the real detector path;
the screenshot lands in shots/health-nodes.png for a human to look at."""

import os
import random
from pathlib import Path

import pytest

from tests.factories import NodeFactory
from tests.health.test_services import run_on
from triage.models import NodeHealth

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.django_db(transaction=True)]
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

SHOTS = Path(__file__).resolve().parents[2] / "shots"
ARGS = [
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
        browser = pw.chromium.launch(executable_path=chromium_path, args=ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        yield context
        browser.close()


def test_it_shows_black_holes_first_in_the_browser(live_server, page, ended, people, client):
    rng = random.Random(5)
    for site in ("FNAL", "CERN", "RAL"):
        for i in range(4):
            node = NodeFactory(hostname=f"wn{i:03d}.{site.lower()}.example", site=site)
            run_on(ended, node, "".join("x" if rng.random() < 0.08 else "." for _ in range(12)))
    run_on(ended, NodeFactory(hostname="wn666.fnal.example", site="FNAL"), "." * 6 + "f" * 7)
    run_on(ended, NodeFactory(hostname="wn013.ral.example", site="RAL"), "..xx.x.x..x")
    assert NodeHealth.objects.filter(state="black_hole").count() == 1

    client.force_login(people["viewer"])
    cookie = client.cookies["sessionid"]
    page.add_cookies([{"name": "sessionid", "value": cookie.value, "url": live_server.url}])
    tab = page.new_page()
    tab.goto(live_server.url + "/nodes/")
    first_site = tab.locator("details.site summary b").first.inner_text()
    assert first_site == "FNAL"
    assert tab.locator("tr.hs-black_hole").first.inner_text().startswith("wn666.fnal.example")
    assert "wn666.fnal.example" in tab.locator(".excl").inner_text()
    SHOTS.mkdir(exist_ok=True)
    tab.screenshot(path=str(SHOTS / "health-nodes.png"), full_page=True)
    tab.locator("tr.hs-black_hole a").first.click()
    tab.wait_for_selector(".timeline")
    tab.screenshot(path=str(SHOTS / "health-node-detail.png"), full_page=True)
