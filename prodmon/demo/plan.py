"""What each demo job does: its stage, input, output, site, host and how each
of its attempts ends. Deterministic for a given seed."""

import random
import signal
from dataclasses import dataclass

STAGES = ("gen", "reco", "ana")

# How an attempt ends -> the reporter's exit status (a signal N gives 128+N).
# 8020 and 8021 are art/CMSSW file-open and file-read codes; a process exit
# status keeps only the low 8 bits, so they arrive as 84 and 85.
SCENARIOS = {
    "success": 0,
    "config_error": 65,
    "file_open_error": 8020 & 0xFF,
    "file_read_error": 8021 & 0xFF,
    "stage_out_failure": 1,
    "bad_alloc": 128 + signal.SIGABRT,
    "oom_kill": 128 + signal.SIGKILL,
    "segfault": 128 + signal.SIGSEGV,
    "sigbus": 128 + signal.SIGBUS,
}
FAILURES = (
    "config_error",
    "file_open_error",
    "segfault",
    "oom_kill",
    "stage_out_failure",
    "bad_alloc",
    "file_read_error",
    "sigbus",
)
FAILURE_SHARE = 0.27

HOSTS = {
    "FNAL": ("fnpc4012.fnal.gov", "fnpc4519.fnal.gov", "fnpc9031.fnal.gov"),
    "CERN": ("b7g17p4410.cern.ch", "b7g18p1023.cern.ch"),
    "RAL": ("lcg2217.gridpp.rl.ac.uk", "lcg1781.gridpp.rl.ac.uk"),
    "MWT2": ("uct2-c341.mwt2.org", "iut2-c118.mwt2.org"),
}
# A node with a bad local disk: crashes there are a pattern, not bad luck.
BLACK_HOLE = ("RAL", "lcg2217.gridpp.rl.ac.uk")
BLACK_HOLE_SCENARIOS = ("segfault", "sigbus")


@dataclass(frozen=True)
class AttemptPlan:
    scenario: str
    site: str
    host: str

    @property
    def expected_exit(self) -> int:
        return SCENARIOS[self.scenario]


@dataclass(frozen=True)
class JobPlan:
    stage: str
    number: int
    key: str
    output: str
    events: int
    cores: int
    attempts: tuple[AttemptPlan, ...]


def stage_sizes(jobs: int) -> dict[str, int]:
    """gen : reco : ana as 12 : 10 : 8 of 30, at least one gen job."""
    ana, reco = jobs * 8 // 30, jobs * 10 // 30
    return {"gen": jobs - reco - ana, "reco": reco, "ana": ana}


def _names(stage: str, number: int) -> tuple[str, str]:
    """(job key = its input, output file) along the gen -> reco -> ana chain."""
    if stage == "gen":
        return f"seed_{number:04d}", f"gen_{number:04d}.root"
    if stage == "reco":
        return f"gen_{number:04d}.root", f"reco_{number:04d}.root"
    return f"reco_{number:04d}.root", f"hist_{number:04d}.root"


def job_plan(*, jobs: int, seed: int) -> list[JobPlan]:
    """Mostly successes, one job that fails and then succeeds on its retry,
    and about a quarter failing in assorted ways."""
    rng = random.Random(seed)
    slots = [(stage, n) for stage, size in stage_sizes(jobs).items() for n in range(1, size + 1)]
    failures = min(len(FAILURES), max(1, round(jobs * FAILURE_SHARE)))
    picked = rng.sample(range(len(slots)), min(len(slots), failures + 1))
    retried, failing = picked[0], dict(zip(picked[1:], FAILURES, strict=False))
    everywhere = [(site, host) for site, hosts in HOSTS.items() for host in hosts]

    plans = []
    for index, (stage, number) in enumerate(slots):
        key, output = _names(stage, number)
        if index == retried:
            first, second = rng.sample(everywhere, 2)
            attempts = (
                AttemptPlan("file_open_error", *first),
                AttemptPlan("success", *second),
            )
        else:
            scenario = failing.get(index, "success")
            where = BLACK_HOLE if scenario in BLACK_HOLE_SCENARIOS else rng.choice(everywhere)
            attempts = (AttemptPlan(scenario, *where),)
        plans.append(
            JobPlan(
                stage=stage,
                number=number,
                key=key,
                output=output,
                events=rng.randint(25, 45),
                cores=2 if stage == "reco" else 1,
                attempts=attempts,
            )
        )
    return plans
