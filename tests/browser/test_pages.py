"""Click through the portal in a real browser: login, campaigns, filtered jobs, a job,
an attempt and its log. Full-page screenshots land in shots/ for a human to review."""

import re

import pytest

from tests.browser.conftest import INJECTED, PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.services]


def test_it_walks_from_campaigns_to_an_attempt_log(live_server, page, portal, shot):
    gen = portal.stages["gen"]
    page.goto(live_server.url + "/")
    assert "/accounts/login/" in page.url
    shot(page, "login")

    page.fill("#id_username", portal.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(live_server.url + "/")
    assert page.locator(".account .who").inner_text() == portal.username

    # Campaign list, gen stage: 44+6+5+3+2 jobs plus the failing one, 61 of 60 expected.
    card = page.locator(f"#campaign-{portal.campaign.pk}")
    gen_row = card.locator(".stage-row").filter(has=page.locator("strong", has_text="gen"))
    failed = gen_row.locator("a.cnt[data-state=failed]")
    assert failed.inner_text().strip() == "7 failed"
    assert gen_row.locator("a.cnt[data-state=succeeded]").inner_text().strip() == "44 succeeded"
    assert gen_row.locator(".pct").inner_text().strip() == "72.1%"  # 44 of 61 jobs
    assert gen_row.locator(".bar .seg.st-failed").count() == 1
    assert "secret-mu2e-campaign" not in page.content()
    shot(page, "campaigns")

    # The failed count links to the job table filtered by stage and state.
    failed.click()
    page.wait_for_url(re.compile(r"/jobs/\?"))
    assert f"stage={gen.pk}" in page.url
    assert "state=failed" in page.url
    rows = page.locator("table.jobs tbody tr")
    assert rows.count() == 7
    assert set(page.locator("table.jobs tbody .badge").all_inner_texts()) == {"failed"}
    assert page.locator("select[name=state]").input_value() == "failed"
    shot(page, "jobs")

    page.click(f"text={portal.failing_job.key}")
    page.wait_for_url(live_server.url + portal.failing_job.get_absolute_url())
    assert page.locator("table.attempts tbody tr").count() == 2
    shot(page, "job")

    page.locator("table.attempts tbody tr").nth(1).locator("a", has_text="details").click()
    page.wait_for_url(live_server.url + portal.failing_attempt.get_absolute_url())
    log = page.locator("pre.log")
    assert log.is_visible()
    text = log.inner_text()
    assert "Begin processing the 1st record" in text
    assert "Art has completed and will exit with status 65." in text
    assert "[… 1,234 bytes missing …]" in text
    # The injected markup is shown as text and never ran.
    assert INJECTED in text
    assert "<b>not bold</b>" in text
    assert log.locator("script").count() == 0
    assert log.locator("b").count() == 0
    assert page.evaluate("window.pwned") is None
    # Long lines scroll inside the log box instead of widening the page.
    assert log.evaluate("el => el.scrollWidth > el.clientWidth")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    shot(page, "attempt")


def test_it_shows_the_campaign_page_and_logs_out(live_server, page, portal, shot):
    page.goto(live_server.url + portal.campaign.get_absolute_url())
    page.fill("#id_username", portal.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(live_server.url + portal.campaign.get_absolute_url())

    assert "mc2025a" in page.locator("h1").inner_text()
    assert page.locator(".stage-row").count() == 3
    assert "g4 ← gen" in page.locator(".stage-row").nth(1).inner_text().replace("\n", " ")
    assert page.locator(".config").count() == 3
    failures = page.locator("section", has_text="Recent failed attempts")
    assert failures.locator("tbody tr").count() > 0
    shot(page, "campaign")

    failures.locator("tbody tr").first.locator("a", has_text="attempt").click()
    page.wait_for_url(re.compile(r"/attempts/[0-9a-f-]{36}/$"))

    page.click("text=Log out")
    page.wait_for_url(re.compile(r"/accounts/login/"))
    page.goto(live_server.url + "/jobs/")
    assert "/accounts/login/" in page.url


def test_it_paginates_and_sorts_the_job_table(live_server, page, portal, shot):
    page.goto(live_server.url + "/jobs/")
    page.fill("#id_username", portal.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/jobs/$"))

    assert page.locator("table.jobs tbody tr").count() == 50
    assert "1–50 of" in page.locator(".pager").inner_text()
    page.click("table.jobs th >> text=Job")
    page.wait_for_url(re.compile(r"sort=key"))
    first = page.locator("table.jobs tbody tr td.key").first.inner_text()
    assert first == "g4_00001.root"
    page.locator(".pager a[rel=next]").click()
    page.wait_for_url(re.compile(r"page=2"))
    assert "sort=key" in page.url
    shot(page, "jobs-page2")
