"""Create the demo campaign and run its jobs for real.

Every job is a real payload process (payload.py) wrapped by the real reporter
(logserver/prodmon_report.py), posting to the server at `url` exactly as a
worker node would. So the server must be running and must use the same
database as this process; demo_load checks both before running anything.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from django.db import transaction

from logserver import prodmon_report
from logserver import services as log_services
from prodmon import selectors, services
from prodmon.demo.plan import STAGES, AttemptPlan, JobPlan, job_plan, stage_sizes
from prodmon.models import Attempt, Campaign, Experiment, Job

DEMO_EXPERIMENT = "demo"
DEMO_CAMPAIGN = "mc-2026-demo"
PAYLOAD = Path(__file__).with_name("payload.py")
REPORTER = Path(prodmon_report.__file__)
RELEASE = "dunesw v10_01_00 -q e26:prof"
ENVIRONMENT = {
    "DUNESW_VERSION": "v10_01_00",
    "DUNESW_QUALIFIER": "e26:prof",
    "IFDH_CP_MAXRETRIES": "2",
}
STAGE_SPECS = {
    "gen": {
        "job_type": "generation",
        "command": "lar -c prodsingle_mu_dune10kt.fcl -n 30 -o gen_${PROCESS}.root",
        "config_files": {
            "prodsingle_mu_dune10kt.fcl": (
                '#include "prodsingle_common_dune.fcl"\n'
                "physics.producers.generator.PDG: [ 13 ]\n"
                "physics.producers.generator.P0: [ 2.0 ]\n"
                "physics.producers.generator.SigmaP: [ 0.5 ]\n"
                "services.Geometry: @local::dune10kt_1x2x6_geo\n"
            )
        },
    },
    "reco": {
        "job_type": "reconstruction",
        "command": "lar -c reco_dune10kt.fcl -s ${INPUT} -o reco_${PROCESS}.root",
        "config_files": {
            "reco_dune10kt.fcl": (
                '#include "standard_reco_dune10kt.fcl"\n'
                "physics.producers.pandora.ConfigFile: PandoraSettings_Master_ProtoDUNE_HD.xml\n"
                "services.TFileService.fileName: reco_hist.root\n"
            )
        },
    },
    "ana": {
        "job_type": "analysis",
        "command": "lar -c ana_dune10kt.fcl -s ${INPUT} -T hist_${PROCESS}.root",
        "config_files": {
            "ana_dune10kt.fcl": (
                '#include "anatree_dune10kt.fcl"\nphysics.analyzers.ana.SaveCaloInfo: true\n'
            )
        },
    },
}
HTTP_TIMEOUT_S = 10
# How long each reporter may wait for delivery at its end. A healthy server
# needs well under a second; a broken one should fail the demo quickly.
DRAIN_TIMEOUT_S = 15
DONE_LINE = re.compile(r"prodmon-report: done: (.*)")


class DemoError(Exception):
    """The demo cannot run; the message says what to do about it."""


@dataclass
class AttemptOutcome:
    job: JobPlan
    number: int
    plan: AttemptPlan
    uid: uuid.UUID
    returncode: int
    seconds: float
    delivery: dict[str, int]
    stderr_tail: str = ""

    @property
    def description(self) -> str:
        if self.returncode == 0:
            return "succeeded"
        if self.returncode > 128:
            number = self.returncode - 128
            return f"failed, signal {number} ({signal.Signals(number).name})"
        return f"failed, exit {self.returncode}"

    @property
    def undelivered(self) -> int:
        d = self.delivery
        return d.get("rejected", 0) + d.get("dropped", 0) + d.get("spooled", 0)


@dataclass
class DemoReport:
    campaign: Campaign
    outcomes: list[AttemptOutcome] = field(default_factory=list)
    seconds: float = 0.0


def demo_campaign_get() -> Campaign | None:
    return (
        Campaign.objects.filter(experiment__name=DEMO_EXPERIMENT, name=DEMO_CAMPAIGN)
        .select_related("experiment")
        .first()
    )


def demo_setup(*, jobs: int) -> tuple[Campaign, str]:
    """The demo experiment, campaign, stages gen -> reco -> ana with their config
    snapshots, and an ingest token. Returns (campaign, raw token)."""
    sizes = stage_sizes(jobs)
    with transaction.atomic():
        experiment = Experiment.objects.filter(name=DEMO_EXPERIMENT).first()
        if experiment is None:
            experiment = services.experiment_create(name=DEMO_EXPERIMENT, title="Demo experiment")
        campaign = services.campaign_create(
            experiment=experiment,
            name=DEMO_CAMPAIGN,
            title="Demo MC production",
            description=(
                "Single-muon MC, generated, reconstructed and analysed. Loaded by "
                "`manage.py demo`: every job really ran, wrapped by prodmon-report."
            ),
        )
        previous = []
        for order, name in enumerate(STAGES, start=1):
            spec = STAGE_SPECS[name]
            stage = services.stage_create(
                campaign=campaign,
                name=name,
                order=order,
                job_type=spec["job_type"],
                expected_jobs=sizes[name],
                depends_on=previous,
                command=spec["command"],
                release=RELEASE,
                environment=ENVIRONMENT,
                config_files=spec["config_files"],
            )
            previous = [stage]
        _token, raw = log_services.token_create(
            experiment=experiment, name="demo-loader", scopes=["ingest", "read"]
        )
    return campaign, raw


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def server_check(*, url: str) -> None:
    try:
        status, _ = _get(f"{url}/healthz")
    except OSError as exc:
        raise DemoError(
            f"no prodmon server answers at {url} ({exc}). Start one "
            "(python manage.py runserver) and pass its address with --url."
        ) from exc
    if status != 200:
        raise DemoError(f"{url}/healthz answered {status}; is that a prodmon server?")


def server_shares_database(*, url: str, token: str) -> bool:
    """True when the server knows the token just created here, i.e. reads our database."""
    status, body = _get(f"{url}/api/v1/campaigns/", token)
    if status != 200:
        return False
    names = [c.get("name") for c in json.loads(body).get("results", [])]
    return DEMO_CAMPAIGN in names


def _reporter_env(*, url: str, token: str, workdir: str, spool_dir: str, pace: float) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODMON_")}
    host = urlsplit(url).hostname or ""
    env["no_proxy"] = ",".join(filter(None, [host, env.get("no_proxy", "")]))
    env.update(
        PRODMON_URL=url,
        PRODMON_TOKEN=token,
        PRODMON_CAMPAIGN=DEMO_CAMPAIGN,
        PRODMON_HEARTBEAT_SECONDS=str(max(0.25, pace)),
        PRODMON_OUTPUTS="*.root",
        PRODMON_WORKDIR=workdir,
        PRODMON_SPOOL_DIR=spool_dir,
        PRODMON_DRAIN_TIMEOUT=str(DRAIN_TIMEOUT_S),
    )
    return env


def _run_attempt(
    *, url: str, token: str, spool_dir: str, pace: float, job: JobPlan, index: int, number: int
) -> AttemptOutcome:
    plan = job.attempts[number - 1]
    uid = uuid.uuid4()
    with tempfile.TemporaryDirectory(prefix="prodmon-demo-job-") as workdir:
        env = _reporter_env(url=url, token=token, workdir=workdir, spool_dir=spool_dir, pace=pace)
        env.update(
            PRODMON_STAGE=job.stage,
            PRODMON_JOB=job.key,
            PRODMON_ATTEMPT=str(uid),
            PRODMON_SITE=plan.site,
            PRODMON_HOST=plan.host,
            PRODMON_BATCH_ID=f"{7340000 + index}.{number - 1}",
            PRODMON_CORES=str(job.cores),
        )
        payload = [
            sys.executable,
            str(PAYLOAD),
            *("--stage", job.stage, "--key", job.key, "--output", job.output),
            *("--scenario", plan.scenario, "--events", str(job.events)),
            *("--pace", str(pace), "--seed", str(index * 10 + number)),
        ]
        began = time.monotonic()
        proc = subprocess.run(
            [sys.executable, str(REPORTER), "--", *payload],
            env=env,
            stdout=subprocess.DEVNULL,  # the payload's log reaches the server instead
            stderr=subprocess.PIPE,
            timeout=300,
        )
    stderr = proc.stderr.decode("utf-8", "replace")
    done = DONE_LINE.findall(stderr)
    delivery = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", done[-1])} if done else {}
    return AttemptOutcome(
        job=job,
        number=number,
        plan=plan,
        uid=uid,
        returncode=proc.returncode,
        seconds=time.monotonic() - began,
        delivery=delivery,
        stderr_tail="\n".join(stderr.strip().splitlines()[-4:]),
    )


def _demo_remove(campaign: Campaign, *, keep_experiment: bool) -> None:
    if keep_experiment:
        campaign.delete()
    else:
        campaign.experiment.delete()


def demo_load(
    *,
    url: str,
    jobs: int = 30,
    parallel: int = 4,
    pace: float = 1.0,
    seed: int = 2026,
    write: Callable[[str], None] = print,
) -> DemoReport | None:
    """Load the demo. None when it was loaded before (nothing is changed then).

    Raises DemoError when no server answers at `url`, when it uses another
    database than this process, or when it does not take the reporter's events;
    what was created is removed again then, so a rerun starts clean."""
    url = url.rstrip("/")
    existing = demo_campaign_get()
    if existing is not None:
        write(
            f"The demo is already loaded: campaign {existing}, "
            f"{url}/campaigns/{existing.pk}/. Nothing to do."
        )
        return None
    server_check(url=url)
    had_experiment = Experiment.objects.filter(name=DEMO_EXPERIMENT).exists()
    campaign, token = demo_setup(jobs=jobs)
    if not server_shares_database(url=url, token=token):
        _demo_remove(campaign, keep_experiment=had_experiment)
        raise DemoError(
            f"the server at {url} does not know the token just created, so it uses another "
            "database than this command. Run both with the same DATABASE_URL (and "
            "PRODMON_VAR_DIR), then try again."
        )
    write(
        f"Created experiment {DEMO_EXPERIMENT!r}, campaign {campaign.name!r} "
        "(stages gen -> reco -> ana) and an ingest token, shown once and stored hashed:"
    )
    write(f"  {token}")

    plans = job_plan(jobs=jobs, seed=seed)
    attempts = sum(len(p.attempts) for p in plans)
    write(
        f"Running {len(plans)} jobs ({attempts} attempts), {parallel} at a time, "
        f"through prodmon-report against {url} ..."
    )
    report = DemoReport(campaign=campaign)
    spool_dir = tempfile.mkdtemp(prefix="prodmon-demo-spool-")
    lock = threading.Lock()
    finished = Counter()
    failed_delivery: list[AttemptOutcome] = []

    def run_job(index: int, job: JobPlan) -> None:
        for number in range(1, len(job.attempts) + 1):
            if failed_delivery:
                return  # the server is not taking events: stop starting jobs
            outcome = _run_attempt(
                url=url,
                token=token,
                spool_dir=spool_dir,
                pace=pace,
                job=job,
                index=index,
                number=number,
            )
            last = number == len(job.attempts)
            with lock:
                report.outcomes.append(outcome)
                if outcome.undelivered or not outcome.delivery:
                    failed_delivery.append(outcome)
                if last:
                    finished["jobs"] += 1
                _progress(write, outcome, finished["jobs"], len(plans), last)

    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = [pool.submit(run_job, i, job) for i, job in enumerate(plans)]
        for future in futures:
            future.result()
    report.seconds = time.monotonic() - began

    if failed_delivery:
        # Leave nothing half-loaded, so that a rerun starts clean.
        shutil.rmtree(spool_dir, ignore_errors=True)
        _demo_remove(campaign, keep_experiment=had_experiment)
        raise DemoError(
            f"the server at {url} did not take the reporter's events, so the demo stopped "
            "and removed what it had created. Check the server's log. The reporter said:\n"
            + failed_delivery[0].stderr_tail
        )
    shutil.rmtree(spool_dir, ignore_errors=True)
    _summary(write, report, url=url, parallel=parallel)
    return report


def _progress(
    write: Callable[[str], None], outcome: AttemptOutcome, done: int, total: int, last: bool
) -> None:
    job, plan = outcome.job, outcome.plan
    counter = f"job {done:>{len(str(total))}}/{total}" if last else " " * (len(str(total)) * 2 + 5)
    notes = []
    if outcome.returncode != plan.expected_exit:
        notes.append(f"expected exit status {plan.expected_exit}")
    if outcome.undelivered:
        notes.append(f"{outcome.undelivered} events not delivered")
    if not last:
        notes.append("will be retried")
    extra = f" [{'; '.join(notes)}]" if notes else ""
    write(
        f"{counter} {job.stage:<4} {job.key:<15} #{outcome.number} "
        f"{plan.site:<4} {plan.host:<24} {outcome.description:<28} "
        f"{outcome.seconds:4.1f} s{extra}"
    )


def _summary(write: Callable[[str], None], report: DemoReport, *, url: str, parallel: int) -> None:
    outcomes = report.outcomes
    campaign = report.campaign
    attempts = selectors.attempt_list(experiment_ids={campaign.experiment_id}).filter(
        job__stage__campaign=campaign
    )
    by_status = Counter(attempts.values_list("status", flat=True))
    job_states = Counter(
        selectors.job_list(experiment_ids={campaign.experiment_id})
        .filter(stage__campaign=campaign)
        .values_list("state", flat=True)
    )
    failures = Counter(o.description.removeprefix("failed, ") for o in outcomes if o.returncode)
    sent = sum(o.delivery.get("sent", 0) for o in outcomes)
    undelivered = sum(o.undelivered for o in outcomes)
    jobs = len({(o.job.stage, o.job.key) for o in outcomes})
    write(
        f"Done: {jobs} jobs, {len(outcomes)} attempts in {report.seconds:.1f} s "
        f"({parallel} at a time)."
    )
    write(
        f"  the server recorded {by_status[Attempt.Status.SUCCEEDED]} attempts succeeded, "
        f"{by_status[Attempt.Status.FAILED]} failed; jobs: "
        f"{job_states[Job.State.SUCCEEDED]} succeeded, {job_states[Job.State.FAILED]} failed"
    )
    if failures:
        write("  failures: " + ", ".join(f"{what} x{n}" for what, n in sorted(failures.items())))
    write(f"  reporter events: {sent} delivered, {undelivered} not delivered")
    write(f"  open {url}/campaigns/{campaign.pk}/")
