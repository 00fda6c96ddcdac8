"""In a real browser (Debian's Chromium through Playwright): click retry on a
failed job and watch the new attempt run; confirm a bulk retry and watch its
progress; launch a stage and cancel it during its back-out delay. Full-page
screenshots of every action page land in shots/actions-*.png."""

import os
import re

import pytest
from django.utils import timezone

from prodmon import services as production
from prodmon.actions import services
from prodmon.models import Attempt, BulkAction, Job, Role
from prodmon.submission.config import submission_dir
from tests.browser.conftest import CHROMIUM_ARGS, SHOTS_DIR, login
from tests.conftest import uses_postgres
from tests.factories import (
    AttemptFactory,
    CampaignFactory,
    JobFactory,
    MembershipFactory,
    NodeFactory,
    UserFactory,
)
from tests.submission.conftest import local_runners_wait, local_slots_held, runner_exited

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.django_db(transaction=True)]
# Playwright's sync API runs an event loop in this thread; ORM calls stay synchronous.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"


@pytest.fixture
def chrome(chromium_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def tab(chrome):
    context = chrome.new_context(viewport={"width": 1440, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    yield tab
    context.close()


def shot(tab, name: str) -> None:
    SHOTS_DIR.mkdir(exist_ok=True)
    tab.screenshot(path=str(SHOTS_DIR / f"{name}.png"), full_page=True)


@pytest.fixture
def production_site(experiment, live_server, settings, tmp_path):
    """A campaign with a failing stage, run by the real local backend against the
    live server; actions run in a background thread as in the embedded mode."""
    settings.PRODMON_SUBMISSION_BACKEND = "local"
    settings.PRODMON_SUBMISSION_DIR = tmp_path / "submission"
    settings.PRODMON_SUBMISSION_URL = live_server.url
    # In a background thread, as in the embedded mode; SQLite's in-memory test
    # database cannot take a second writer thread, so there they run inline.
    settings.PRODMON_ACTIONS_RUNNER = "thread" if uses_postgres() else "celery"
    settings.PRODMON_LAUNCH_BACKOUT_SECONDS = 30
    settings.PRODMON_LOCAL_MAX_JOBS = 1
    campaign = CampaignFactory(experiment=experiment, name="mc2025a", title="MC 2025a")
    gen = production.stage_create(
        campaign=campaign,
        name="gen",
        expected_jobs=8,
        command='echo "generating $PRODMON_JOB"; sleep 1; echo done',
        environment={"DUNE_RELEASE": "v10_01_02d00", "PRODMON_SPOOL_DIR": str(tmp_path / "spool")},
    )
    reco = production.stage_create(
        campaign=campaign, name="reco", depends_on=[gen], command="echo reco $PRODMON_JOB"
    )
    bad = NodeFactory(hostname="wn-bad.fnal.gov", site="FNAL")
    good = NodeFactory(hostname="wn-good.fnal.gov", site="FNAL")
    now = timezone.now()
    jobs = []
    for i in range(6):
        node = bad if i < 4 else good
        job = JobFactory(
            stage=gen, key=f"gen_{i:05d}.root", state=Job.State.FAILED, attempt_count=1
        )
        AttemptFactory(
            job=job,
            number=1,
            node=node,
            status=Attempt.Status.FAILED,
            exit_code=137 if node == bad else 65,
            started_at=now - timezone.timedelta(minutes=40),
            ended_at=now - timezone.timedelta(minutes=5),
            peak_rss_bytes=2100 * 2**20,
            request_memory_mb=2000,
        )
        jobs.append(job)
    JobFactory(stage=gen, key="gen_00099.root", state=Job.State.SUCCEEDED)
    JobFactory(stage=reco, key="reco_in.root")
    shifter = MembershipFactory(
        user=UserFactory(username="sam.shifter"), experiment=experiment, role=Role.SHIFTER
    ).user
    manager = MembershipFactory(
        user=UserFactory(username="paula.manager"), experiment=experiment, role=Role.MANAGER
    ).user
    yield {"gen": gen, "reco": reco, "jobs": jobs, "shifter": shifter, "manager": manager}
    # A launch cancelled in its back-out still has a timer waiting in this process,
    # and local jobs may still be reporting: both end before the database is reset.
    services.thread_runner_stop()
    local_runners_wait(tmp_path / "submission")


def sign_in(tab, live_server, url, username):
    tab.goto(live_server.url + url)
    login(tab, live_server.url, username)
    tab.wait_for_url(live_server.url + url)


def test_it_retries_a_job_with_one_click_and_shows_the_new_attempt(
    live_server, tab, production_site
):
    job = production_site["jobs"][4]
    sign_in(tab, live_server, job.get_absolute_url(), "sam.shifter")
    rows = tab.locator("table.attempts tbody tr")
    assert rows.count() == 1
    shot(tab, "actions-job-before-retry")

    # The job waits for the only local slot while we look at the page.
    with local_slots_held(submission_dir(), 1):
        tab.check("#more-resources")
        tab.click("#retry-button")
        tab.wait_for_url(live_server.url + job.get_absolute_url())
        assert "Retry submitted" in tab.locator(".messages").inner_text()
        assert rows.count() == 2
        assert rows.nth(1).locator(".badge").inner_text() == "queued"
        shot(tab, "actions-job-queued")
        new = Attempt.objects.get(job=job, number=2)
        assert new.request_memory_mb == 3000  # ×1.5

    # Now it really runs: the local backend, the reporter posting to this server.
    runner_exited(submission_dir(), new.uid)
    tab.reload()
    assert rows.nth(1).locator(".badge").inner_text() == "succeeded"
    assert "job.retry" in tab.locator("#history").inner_text()
    shot(tab, "actions-job-after-retry")

    rows.nth(1).locator("a", has_text="details").click()
    tab.wait_for_url(re.compile(r"/attempts/"))
    assert "3000 MB" in tab.locator("#batch").inner_text()
    assert "generating gen_00004.root" in tab.locator("pre.log").inner_text()
    shot(tab, "actions-attempt")

    tab.click(f"a[href='{new.submission.get_absolute_url()}']")
    assert "local_runner.py" in tab.locator("#submission-command").inner_text()
    shot(tab, "actions-submission")


def test_it_confirms_a_bulk_retry_and_shows_its_progress(live_server, tab, production_site):
    gen = production_site["gen"]
    url = f"/actions/retry/?stage={gen.pk}&node=wn-bad"
    sign_in(tab, live_server, url, "sam.shifter")
    assert tab.locator("#eligible-count").inner_text().startswith("4")
    assert tab.locator("#retry-sample tbody tr").count() == 4
    shot(tab, "actions-retry-confirm")

    with local_slots_held(submission_dir(), 1):
        tab.click("#confirm-retry")
        tab.wait_for_url(re.compile(r"/actions/\d+/$"))
        # The page polls the status endpoint until every job is handed over.
        tab.wait_for_function(
            "document.getElementById('action-progress').dataset.state === 'done'",
            timeout=60_000,
        )
        assert tab.locator("[data-field=done]").first.inner_text() == "4"
        shot(tab, "actions-progress")
        action = BulkAction.objects.get()
        assert (action.total, action.done) == (4, 4)

    new = Attempt.objects.filter(job__in=production_site["jobs"][:4], number=2)
    assert new.count() == 4
    for attempt in new:
        runner_exited(submission_dir(), attempt.uid)
    tab.goto(live_server.url + production_site["jobs"][0].get_absolute_url())
    rows = tab.locator("table.attempts tbody tr")
    assert rows.count() == 2
    assert rows.nth(1).locator(".badge").inner_text() == "succeeded"


def test_it_launches_a_stage_and_cancels_it_during_the_back_out(live_server, tab, production_site):
    reco = production_site["reco"]
    sign_in(tab, live_server, f"/stages/{reco.pk}/operations/", "paula.manager")
    shot(tab, "actions-stage")
    tab.click("#launch-stage")
    tab.wait_for_url(re.compile(r"/actions/\d+/$"))
    assert tab.locator("#countdown").is_visible()
    tab.wait_for_function(
        "Number(document.querySelector('[data-field=seconds_left]').textContent) <= 29"
    )
    shot(tab, "actions-launch-countdown")
    tab.click("#cancel-action")
    tab.wait_for_url(re.compile(r"/actions/\d+/$"))
    assert "cancelled" in tab.locator(".messages").inner_text()
    assert BulkAction.objects.get().state == "cancelled"
    assert Attempt.objects.filter(job__stage=reco).count() == 0
    shot(tab, "actions-launch-cancelled")

    gen = production_site["gen"]
    tab.goto(live_server.url + f"/stages/{gen.pk}/recovery/?type=failed")
    assert tab.locator("#eligible-count").inner_text().startswith("6")
    shot(tab, "actions-recovery")
    tab.goto(live_server.url + f"/stages/{gen.pk}/abort/")
    shot(tab, "actions-abort")
    tab.goto(live_server.url + "/audit/")
    assert "launch.cancel" in tab.locator("table.audit").inner_text()
    shot(tab, "actions-audit")


def test_it_hides_the_launch_button_from_a_shifter(live_server, tab, production_site):
    reco = production_site["reco"]
    sign_in(tab, live_server, f"/stages/{reco.pk}/operations/", "sam.shifter")
    assert tab.locator("#launch-stage").count() == 0
    assert "production manager role" in tab.locator("#operations").inner_text()
