"""The log viewer and log search in a real browser (Playwright + Debian's
Chromium against pytest-django's live server): hostile log text stays text,
ANSI colours render, invalid UTF-8 shows replacement characters, a 1 MB line
does not freeze the page, and a running job's log follows live.

Full-page screenshots land in shots/log-*.png for a human to look at."""

import os
import time
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone

from logserver import indexing, services
from prodmon.models import Attempt, Campaign, Job, Role, Stage
from tests.factories import (
    AttemptFactory,
    CampaignFactory,
    JobFactory,
    MembershipFactory,
    NodeFactory,
    StageFactory,
    UserFactory,
)

# Playwright's sync API runs an event loop in this thread; the test's own ORM
# calls are still plain synchronous code.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

pytestmark = [pytest.mark.browser, pytest.mark.services]
SHOTS = Path(__file__).resolve().parents[2] / "shots"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HOSTILE = (
    "user payload: <script>window.pwned=1</script> "
    '<img src=x onerror="window.pwned=2"> '
    '<a href="javascript:window.pwned=3">click</a> &amp; <b>not bold</b>'
)


@pytest.fixture
def browser(chromium_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def member(transactional_db, experiment):
    user = UserFactory(username="shifter.sam")
    MembershipFactory(user=user, experiment=experiment, role=Role.SHIFTER)
    return user


@pytest.fixture
def page(member, browser, live_server):
    client = Client()
    client.force_login(member)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}]
    )
    page = context.new_page()
    page.set_default_timeout(15_000)
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.dialogs = dialogs
    yield page
    context.close()


def _shot(page, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _attempt(experiment, *, status="failed", exit_code=65, key="gen_00042.root"):
    campaign = Campaign.objects.filter(experiment=experiment, name="mc2025a").first()
    campaign = campaign or CampaignFactory(experiment=experiment, name="mc2025a")
    stage = Stage.objects.filter(campaign=campaign).first() or StageFactory(
        campaign=campaign, name="gen"
    )
    job = JobFactory(stage=stage, key=key, state=Job.State.FAILED)
    node = NodeFactory(hostname="fnpc3101.fnal.gov", site="FNAL")
    fields = {"status": status, "exit_code": exit_code, "node": node, "number": 2}
    if status != "running":
        fields["ended_at"] = timezone.now()
    return AttemptFactory(job=job, **fields)


def _write(attempt, data: bytes, offset: int | None = None) -> int:
    attempt.refresh_from_db()
    offset = attempt.log_bytes if offset is None else offset
    services.log_chunk_store(attempt=attempt, offset=offset, data=data)
    end = max(attempt.log_bytes, offset + len(data))
    Attempt.objects.filter(pk=attempt.pk).update(log_bytes=end)
    return end


ART_LOG = (
    "%MSG-i MF_INIT_OK:  Early 01-Mar-2025 14:03:22 UTC JobSetup\n"
    "Messagelogger initialization complete.\n"
    "\x1b[1;32mINFO\x1b[0m Begin processing the 1st record. run: 20000001 subRun: 0 event: 1\n"
    f"{HOSTILE}\n"
    "\x1b[33mWarning\x1b[0m in <TClass::Init>: no dictionary for class sim::MCTrack\n"
    "invalid bytes: \xff\xfe here \x00 and a title escape \x1b]0;evil\x07 gone\n"
)
TAIL = (
    "Begin processing the 412th record. run: 20000001 subRun: 0 event: 412\n"
    "%MSG-s ArtException:  PostEndJob 01-Mar-2025 15:05:40 UTC ModuleEndJob\n"
    "cet::exception caught in art\n"
    "---- FileOpenError BEGIN\n"
    "  ---- FatalRootError BEGIN\n"
    "    \x1b[31mFatal Root Error\x1b[0m: @SUB=TFile::TFile\n"
    "    file /pnfs/dune/scratch/users/dunepro/fluxfiles/gsimple_DUNE_2025.root does not exist\n"
    "    FW_SEARCH_PATH="
    + ":".join(f"/cvmfs/dune.opensciencegrid.org/products/dune/v01_{n:02d}_00" for n in range(300))
    + "\n  ---- FatalRootError END\n"
    "---- FileOpenError END\n"
    "Art has completed and will exit with status 65.\n"
)


def _art_log() -> bytes:
    return ART_LOG.encode("utf-8").replace("\xff\xfe".encode(), b"\xff\xfe")


def test_it_shows_hostile_log_text_literally_and_colours_ansi(page, live_server, experiment):
    attempt = _attempt(experiment)
    head = _art_log()
    _write(attempt, head)
    _write(attempt, TAIL.encode(), offset=len(head) + 1234)
    indexing.log_index_attempt(attempt_id=attempt.pk)

    page.goto(f"{live_server.url}/attempts/{attempt.uid}/log")
    log = page.locator("#log")
    text = log.inner_text()
    assert "<script>window.pwned=1</script>" in text
    assert '<img src=x onerror="window.pwned=2">' in text
    assert "&amp; <b>not bold</b>" in text
    assert log.locator("img, script, b, a[href^='javascript']").count() == 0
    assert page.evaluate("window.pwned") is None
    assert page.dialogs == []
    # ANSI: colour classes, no escape characters, the title sequence gone.
    red = log.locator(".ln .a-fg1", has_text="Fatal Root Error")
    assert red.count() == 1
    assert red.evaluate("e => getComputedStyle(e).color") == "rgb(255, 107, 107)"
    assert "\x1b" not in text
    assert "evil" not in text
    assert "invalid bytes: \ufffd\ufffd here \u2400 and a title escape  gone" in text
    assert "[… 1,234 bytes missing …]" in text
    assert page.locator("#L5").get_attribute("class") == "ln lv-warning"
    first_error = page.locator("a.lv-err")
    assert first_error.inner_text() == "First error: line 9"
    page.goto(f"{live_server.url}/attempts/{attempt.uid}/log?from=1")
    _shot(page, "log-viewer")

    first_error.click()
    page.wait_for_url("**?line=9#L9")
    assert page.evaluate("document.querySelector(':target').id") == "L9"

    page.fill("#lv-q", '"does not exist"')
    page.press("#lv-q", "Enter")
    page.wait_for_load_state()
    assert page.locator(".lv-hitlist li").count() == 1
    assert page.locator("#log mark").first.inner_text() == "does not exist"
    _shot(page, "log-viewer-search")


def test_the_search_page_links_hits_to_their_line(page, live_server, experiment):
    attempt = _attempt(experiment)
    _write(attempt, _art_log() + TAIL.encode())
    indexing.log_index_attempt(attempt_id=attempt.pk)
    other = _attempt(experiment, key="gen_00043.root", exit_code=1)
    _write(other, b"%MSG-s ArtException: PostEndJob\nFatal Root Error: @SUB=TFile::Init\n")
    indexing.log_index_attempt(attempt_id=other.pk)

    page.goto(f"{live_server.url}/logs/search?q=fatal+root")
    rows = page.locator("table.ls-hits tbody tr")
    assert rows.count() == 2
    marks = page.locator("table.ls-hits tr").first.locator("mark").all_inner_texts()
    assert [m.lower() for m in marks] == ["fatal", "root"]
    page.goto(f"{live_server.url}/logs/search?q=%22img+src%22")
    assert page.evaluate("window.pwned") is None
    assert page.locator("table.ls-hits img").count() == 0
    assert '<img src=x onerror="window.pwned=2">' in page.locator("table.ls-hits").inner_text()
    page.goto(f"{live_server.url}/logs/search?q=fatal+root&exit_code=65")
    assert page.locator("table.ls-hits tbody tr").count() == 1
    _shot(page, "log-search")
    page.locator("table.ls-hits a", has_text="line").first.click()
    page.wait_for_url("**#L*")
    target = page.evaluate("document.querySelector(':target').textContent")
    assert "Fatal Root Error" in target


def test_a_one_megabyte_line_does_not_freeze_the_page(page, live_server, experiment):
    attempt = _attempt(experiment)
    lines = "".join(f"event {i} ok\n" for i in range(1, 3001))
    _write(attempt, b"start\n" + b"<script>window.pwned=9</script>" + b"A" * (1 << 20) + b"\n")
    _write(attempt, lines.encode())
    indexing.log_index_attempt(attempt_id=attempt.pk)

    t0 = time.monotonic()
    page.goto(f"{live_server.url}/attempts/{attempt.uid}/log?from=1")
    load_s = time.monotonic() - t0
    assert load_s < 8, f"page took {load_s:.1f} s"
    row = page.locator("#L2")
    assert len(row.locator(".t").inner_text()) < 6000
    button = row.locator("button.more")
    assert "show full line (1.0 MB)" in button.inner_text().replace("\xa0", " ")
    t0 = time.monotonic()
    button.click()
    page.wait_for_function("document.querySelector('#L2 .t.full') !== null")
    assert page.evaluate("1 + 1") == 2  # the page still answers
    expand_s = time.monotonic() - t0
    assert expand_s < 8, f"expanding took {expand_s:.1f} s"
    full = page.evaluate("document.querySelector('#L2 .t').textContent.length")
    assert full >= 1 << 20
    assert page.evaluate("window.pwned") is None
    page.locator("#L3").scroll_into_view_if_needed()
    assert page.locator("#L3").inner_text().endswith("event 1 ok")
    # The page holds one window of lines, not the whole log.
    assert page.locator("#log .ln").count() == 2000
    _shot(page, "log-viewer-long-line")


def test_it_follows_a_running_job_live(page, live_server, experiment):
    attempt = _attempt(experiment, status="running", exit_code=None)
    _write(attempt, b"Begin processing the 1st record\nevent 1 done\npartial li")
    page.goto(f"{live_server.url}/attempts/{attempt.uid}/log")
    assert page.locator("#lv-status .live-dot").count() == 1
    assert page.locator("#L3").inner_text().endswith("partial li")

    _write(attempt, b"ne now complete\n\x1b[31mError\x1b[0m: " + HOSTILE.encode() + b"\n")
    page.wait_for_selector("#L4", timeout=20_000)
    assert page.locator("#L3").inner_text().endswith("partial line now complete")
    assert page.locator("#L3").count() == 1
    row = page.locator("#L4")
    assert "<script>window.pwned=1</script>" in row.inner_text()
    assert row.locator("img, script").count() == 0
    assert row.get_attribute("class") == "ln lv-error"
    assert row.locator(".a-fg1").inner_text() == "Error"
    assert page.evaluate("window.pwned") is None
    _shot(page, "log-viewer-live")

    Attempt.objects.filter(pk=attempt.pk).update(status="failed", exit_code=1)
    _write(attempt, b"the end\n")
    page.wait_for_selector("#L5", timeout=20_000)
    page.wait_for_function(
        "document.getElementById('lv-status').textContent.includes('ended')", timeout=20_000
    )


def test_a_hash_link_to_a_line_on_another_page_opens_that_page(page, live_server, experiment):
    attempt = _attempt(experiment)
    _write(attempt, "".join(f"row {i}\n" for i in range(1, 4001)).encode())
    indexing.log_index_attempt(attempt_id=attempt.pk)
    page.goto(f"{live_server.url}/attempts/{attempt.uid}/log#L7")
    page.wait_for_url("**?line=7#L7")
    assert page.evaluate("document.querySelector(':target').textContent") == "7row 7"
