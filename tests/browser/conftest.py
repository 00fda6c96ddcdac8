"""Headless Chromium (Debian's, through Playwright) against pytest-django's live server,
plus a realistic little production to click through."""

import datetime as dt
import os
import random
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.utils import timezone

from logserver import services as log_services
from prodmon import services
from prodmon.models import Attempt, Campaign, Job, OutputFile, Role
from tests.factories import (
    AttemptFactory,
    CampaignFactory,
    JobFactory,
    MembershipFactory,
    NodeFactory,
    UserFactory,
)

# Playwright's sync API runs an event loop in this thread; the test's own ORM calls
# (fixtures, assertions) are still plain synchronous code, so tell Django so.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

SHOTS_DIR = Path(__file__).resolve().parents[2] / "shots"
PASSWORD = "pw-for-tests"  # what tests.factories.UserFactory sets
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Shown literally on the attempt page; it would set window.pwned if it ever ran.
INJECTED = "<script>window.pwned=1</script>"


@pytest.fixture
def browser(chromium_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


@pytest.fixture
def shot():
    """shot(page, "name") saves a full-page PNG under shots/ for a human to look at."""
    SHOTS_DIR.mkdir(exist_ok=True)

    def save(page, name: str) -> Path:
        path = SHOTS_DIR / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save


@dataclass
class Portal:
    username: str
    campaign: Campaign
    stages: dict
    failing_job: Job
    failing_attempt: Attempt


SITES = {
    "FNAL": [f"fnpc{n}.fnal.gov" for n in range(3101, 3109)],
    "CERN": [f"b7g17p{n}.cern.ch" for n in range(4401, 4405)],
    "RAL": [f"lcg{n}.gridpp.rl.ac.uk" for n in range(2201, 2204)],
    "NIKHEF": ["wn-sate-061.nikhef.nl", "wn-sate-074.nikhef.nl"],
}
FAILURES = [(65, None), (1, None), (137, None), (None, 9), (134, None), (84, None)]


def _node(rng: random.Random):
    site = rng.choice(list(SITES))
    hostname = rng.choice(SITES[site])
    node = NodeFactory(hostname=hostname, site=site)
    if not node.properties:
        node.properties = {"os": "el9", "cvmfs": "ok", "cores": 16, "glibc": "2.34"}
        node.save(update_fields=["properties"])
    return node


def _attempt(rng: random.Random, job: Job, number: int, status: str, now: dt.datetime, **extra):
    if status in Attempt.ENDED:
        wall = rng.randint(600, 14_400)
        ended = now - dt.timedelta(minutes=rng.randint(2, 600))
        started = ended - dt.timedelta(seconds=wall)
    else:
        started = now - dt.timedelta(minutes=rng.randint(20, 600))
        ended = None
        wall = (now - started).total_seconds()
    cpu = wall * rng.uniform(0.55, 0.97)
    fields = {
        "job": job,
        "number": number,
        "status": status,
        "node": _node(rng),
        "created_at": started - dt.timedelta(minutes=rng.randint(1, 90)),
        "started_at": started,
        "ended_at": ended,
        "last_heartbeat_at": ended or now - dt.timedelta(seconds=rng.randint(5, 240)),
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_efficiency": cpu / wall,
        "peak_rss_bytes": rng.randint(900, 3800) * 1024**2,
        "disk_bytes": rng.randint(2, 40) * 1024**3,
        "events_processed": rng.randint(500, 1000) if status != "queued" else None,
        "batch_id": f"{rng.randint(10_000_000, 99_999_999)}.0@jobsub01.fnal.gov",
    }
    if status == "succeeded":
        fields["exit_code"] = 0
        fields["output_bytes"] = rng.randint(1, 4) * 1024**3
    elif status == "failed":
        fields["exit_code"], fields["signal"] = rng.choice(FAILURES)
    if status == "queued":
        for key in ("node", "started_at", "ended_at", "last_heartbeat_at", "wall_s", "cpu_s"):
            fields[key] = None
        fields["cpu_efficiency"] = fields["peak_rss_bytes"] = fields["disk_bytes"] = None
    fields.update(extra)
    return AttemptFactory(**fields)


def _populate(rng: random.Random, stage, mix: dict[str, int], now: dt.datetime) -> list[Job]:
    jobs = []
    n = 0
    for state, count in mix.items():
        for _ in range(count):
            n += 1
            job = JobFactory(
                stage=stage,
                key=f"{stage.name}_{n:05d}.root",
                state=state,
                events_expected=1000,
                expected_outputs=[f"{stage.name}_{n:05d}_out.root"],
            )
            attempts = 0
            if state in ("failed", "succeeded", "running") and rng.random() < 0.25:
                attempts += 1
                _attempt(rng, job, attempts, "failed", now)
            if state != "pending":
                attempts += 1
                status = {"queued": "queued", "running": "running"}.get(state, state)
                a = _attempt(rng, job, attempts, status, now)
                if status == "succeeded":
                    job.good_attempt = a
            job.attempt_count = attempts
            job.save()
            jobs.append(job)
    return jobs


@pytest.fixture
def portal(transactional_db, experiment, other_experiment) -> Portal:
    rng = random.Random(20250301)
    now = timezone.now()
    user = UserFactory(username="shifter.sam")
    MembershipFactory(user=user, experiment=experiment, role=Role.SHIFTER)

    campaign = CampaignFactory(
        experiment=experiment,
        name="mc2025a",
        title="MC production 2025a",
        description="1 GeV ν beam, nominal geometry",
    )
    gen = services.stage_create(
        campaign=campaign,
        name="gen",
        order=1,
        job_type="generation",
        expected_jobs=60,
        command="lar -c prodgenie_nu_dune10kt_1x2x6.fcl -n 1000 -o ${OUTPUT}",
        release="dunesw v10_01_02d00 -q e26:prof",
        environment={"DUNE_RELEASE": "v10_01_02d00"},
        config_files={"prodgenie_nu_dune10kt_1x2x6.fcl": '#include "prodgenie.fcl"\n'},
    )
    g4 = services.stage_create(
        campaign=campaign,
        name="g4",
        order=2,
        job_type="simulation",
        expected_jobs=60,
        depends_on=[gen],
        command="lar -c standard_g4_dune10kt_1x2x6.fcl -s ${INPUT}",
        release="dunesw v10_01_02d00 -q e26:prof",
        config_files={"standard_g4_dune10kt_1x2x6.fcl": "physics: {}\n"},
    )
    reco = services.stage_create(
        campaign=campaign,
        name="reco",
        order=3,
        job_type="reconstruction",
        expected_jobs=60,
        depends_on=[g4],
        command="lar -c standard_reco_dune10kt_1x2x6.fcl -s ${INPUT}",
        release="dunesw v10_01_02d00 -q e26:prof",
    )
    _populate(
        rng, gen, {"succeeded": 44, "failed": 6, "running": 5, "queued": 3, "pending": 2}, now
    )
    _populate(
        rng, g4, {"succeeded": 18, "failed": 3, "running": 12, "queued": 8, "pending": 5}, now
    )
    _populate(rng, reco, {"succeeded": 3, "running": 4, "queued": 2}, now)

    data = CampaignFactory(
        experiment=experiment, name="run7-keepup", title="Run 7 keep-up reconstruction"
    )
    keepup = services.stage_create(campaign=data, name="reco", order=1, expected_jobs=25)
    _populate(rng, keepup, {"succeeded": 25}, now)
    merge = services.stage_create(
        campaign=data, name="merge", order=2, expected_jobs=5, depends_on=[keepup]
    )
    _populate(rng, merge, {"succeeded": 2, "failed": 1, "running": 1}, now)

    # Someone else's campaign: must never show up for this user.
    CampaignFactory(experiment=other_experiment, name="secret-mu2e-campaign")

    failing_job = JobFactory(
        stage=gen,
        key="gen_99999.root",
        state=Job.State.FAILED,
        attempt_count=2,
        events_expected=1000,
    )
    _attempt(rng, failing_job, 1, "failed", now, exit_code=None, signal=9)
    failing = _attempt(
        rng,
        failing_job,
        2,
        "failed",
        now,
        exit_code=65,
        events_processed=412,
        output_bytes=734_003_200,
    )
    OutputFile.objects.create(
        attempt=failing,
        job=failing_job,
        stage=gen,
        campaign=campaign,
        name="gen_99999_partial.root",
        size=734_003_200,
        checksum="adler32:7f3a19c2",
        events=412,
    )
    head = (
        "%MSG-i MF_INIT_OK:  Early 01-Mar-2025 14:03:22 UTC JobSetup\n"
        "Messagelogger initialization complete.\n"
        "Begin processing the 1st record. run: 20000001 subRun: 0 event: 1\n"
        f"user payload echoed: {INJECTED} & <b>not bold</b>\n"
    )
    tail = (
        "Begin processing the 412th record. run: 20000001 subRun: 0 event: 412\n"
        "%MSG-s ArtException:  PostEndJob 01-Mar-2025 15:05:40 UTC ModuleEndJob\n"
        "cet::exception caught in art\n"
        "---- FileOpenError BEGIN\n"
        "  ---- FatalRootError BEGIN\n"
        "    Fatal Root Error: @SUB=TFile::TFile\n"
        "    file /pnfs/dune/scratch/users/dunepro/fluxfiles/gsimple_DUNE_2025.root does not exist"
        "  (a deliberately long line that needs horizontal scrolling in the log viewer)\n"
        "    FW_SEARCH_PATH="
        + ":".join(
            f"/cvmfs/dune.opensciencegrid.org/products/dune/dune_pardata/v01_{n:02d}_00"
            for n in range(12)
        )
        + "\n"
        "  ---- FatalRootError END\n"
        "---- FileOpenError END\n"
        "%MSG\n"
        "Art has completed and will exit with status 65.\n"
    )
    gap = 1234
    log_services.log_chunk_store(attempt=failing, offset=0, data=head.encode())
    log_services.log_chunk_store(attempt=failing, offset=len(head) + gap, data=tail.encode())
    failing.log_bytes = len(head) + gap + len(tail)
    failing.save(update_fields=["log_bytes"])

    return Portal(
        username=user.username,
        campaign=campaign,
        stages={"gen": gen, "g4": g4, "reco": reco},
        failing_job=failing_job,
        failing_attempt=failing,
    )


def login(page, base_url: str, username: str, password: str = PASSWORD) -> None:
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()
