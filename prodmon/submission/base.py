"""The submission layer's interface: what a backend is given, what it answers,
and the helpers every backend shares.

A backend takes a JobSpec (one attempt of one job, already queued in the
database so its uid is known) and hands it to a batch system, wrapped by the
reporter (logserver/prodmon_report.py), which reports the run to prodmon
under the identity passed in the PRODMON_* environment variables.

Backends: "local" (subprocesses on this machine), "slurm" and "htcondor".
One is chosen per stage (Stage.submission_backend), else per experiment
(Experiment.submission_backend), else by the PRODMON_SUBMISSION_BACKEND setting.
"""

import importlib
import logging
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from prodmon.submission.config import setting

logger = logging.getLogger(__name__)

BACKENDS = {
    "local": "prodmon.submission.local.LocalBackend",
    "slurm": "prodmon.submission.slurm.SlurmBackend",
    "htcondor": "prodmon.submission.htcondor.HTCondorBackend",
}

# The environment of a batch job is built, never inherited wholesale from the
# web server (which holds DATABASE_URL and the secret key). These few are kept.
PASSTHROUGH_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME")


class SubmissionError(Exception):
    """The batch system refused or could not be reached. `output` is what it said."""

    def __init__(self, message: str, *, command: str = "", output: str = ""):
        super().__init__(message)
        self.message = message
        self.command = command
        self.output = output


class BatchState:
    """Normalised batch states (the raw one is kept alongside)."""

    QUEUED = "queued"
    RUNNING = "running"
    HELD = "held"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"  # the batch system no longer knows the job
    ENDED = (SUCCEEDED, FAILED, CANCELLED)


@dataclass(frozen=True)
class JobSpec:
    """One attempt to hand to a batch system."""

    attempt_uid: str
    name: str  # the batch job's name
    command: str  # the payload, run by /bin/sh -c under the reporter
    environment: dict[str, str]  # the job's whole environment, PRODMON_* included
    workdir: Path  # per attempt: the batch script, logs, exit file, HTCondor event log
    token_file: Path
    cores: int = 1
    memory_mb: int | None = None
    walltime_s: int | None = None
    exclude_nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatchRef:
    """An attempt as a backend knows it: its batch id and its working directory."""

    batch_id: str
    workdir: Path


@dataclass
class SubmitResult:
    batch_id: str
    command: str  # what was run, shell-quoted (Submission.command)
    output: str  # what the batch system answered (Submission.output)


@dataclass(frozen=True)
class BatchStatus:
    batch_id: str
    state: str  # a BatchState value
    raw_state: str = ""  # as the batch system says it: "TIMEOUT", "job_held" …
    exit_code: int | None = None
    signal: int | None = None
    reason: str = ""
    hold_reason_code: int | None = None
    hold_reason_subcode: int | None = None


@dataclass(frozen=True)
class BatchEventSpec:
    """One event from a batch system's own log (HTCondor's job event log)."""

    seq: int
    kind: str
    at: object  # an aware datetime
    event_code: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    hold_reason_code: int | None = None
    hold_reason_subcode: int | None = None
    reason: str = ""
    data: dict = field(default_factory=dict)


class Backend(Protocol):
    name: ClassVar[str]

    def submit(self, spec: JobSpec) -> SubmitResult:
        """Hand the attempt to the batch system; raise SubmissionError when refused."""

    def cancel(self, ref: BatchRef) -> str:
        """Remove the job (queued or running). Returns what the batch system said."""

    def hold(self, ref: BatchRef) -> str:
        """Keep a queued job from starting. Returns what the batch system said."""

    def release(self, ref: BatchRef) -> str:
        """Undo hold()."""

    def status(self, refs: Sequence[BatchRef]) -> dict[str, BatchStatus]:
        """The state of each job, by batch id. Jobs it cannot tell about are absent."""

    def events(self, ref: BatchRef) -> list[BatchEventSpec]:
        """Events of the job's own log, oldest first (empty where there is no such log)."""


def backend_get(name: str) -> Backend:
    try:
        dotted = BACKENDS[name]
    except KeyError:
        raise SubmissionError(
            f"unknown submission backend {name!r} (known: {', '.join(BACKENDS)})"
        ) from None
    module, cls = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(module), cls)()


def backend_name_for(*, stage_backend: str = "", experiment_backend: str = "") -> str:
    return stage_backend or experiment_backend or setting("PRODMON_SUBMISSION_BACKEND")


def node_exclusion_list() -> list[str]:
    """Hostnames no job should be sent to: the black-hole list of the node-health
    work (`triage.selectors.node_exclusion_list()`). Every backend applies it at
    submit time (Slurm --exclude, HTCondor requirements, the local backend
    refuses when this host is listed). A failing selector never stops a
    submission; it is logged and treated as empty."""
    from triage import selectors as triage_selectors

    try:
        return sorted({str(h) for h in triage_selectors.node_exclusion_list() if h})
    except Exception:  # noqa: BLE001 - a broken hook must not stop production
        logger.exception("triage.selectors.node_exclusion_list failed; excluding no nodes")
        return []


def reporter_environment(
    *,
    url: str,
    token_file: Path | str,
    campaign: str,
    stage: str,
    job: str,
    attempt: str,
    cores: int = 1,
    outputs: Sequence[str] = (),
) -> dict[str, str]:
    """The identity and server address the reporter reads (see its docstring)."""
    env = {
        "PRODMON_URL": url,
        "PRODMON_TOKEN_FILE": str(token_file),
        "PRODMON_CAMPAIGN": campaign,
        "PRODMON_STAGE": stage,
        "PRODMON_JOB": job,
        "PRODMON_ATTEMPT": str(attempt),
        "PRODMON_CORES": str(cores),
    }
    if outputs:
        env["PRODMON_OUTPUTS"] = ",".join(outputs)
    return env


def reporter_argv(*, python: str, reporter: str, command: str) -> list[str]:
    """The reporter wrapping the payload: python prodmon_report.py -- /bin/sh -c CMD."""
    return [python, reporter, "--", "/bin/sh", "-c", command]


def base_environment(extra: dict[str, str]) -> dict[str, str]:
    env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(extra)
    return env


def shell_join(argv: Sequence[str]) -> str:
    return shlex.join(str(a) for a in argv)
