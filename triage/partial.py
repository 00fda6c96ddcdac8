"""Partial failures of multi-output (skimming) jobs: pure functions, no ORM.

One input makes many outputs. The D0 production group listed six ways such
work half-succeeds; each is its own kind here, with what must be redone:

======================  =========  ===========================================
kind                    severity   what must be redone
======================  =========  ===========================================
submission-failed       failure    every input of the submission (no job of it
                                   produced any output)
submission-partial      failure    the inputs of its jobs that produced none
job-failed              failure    the job's input: none of its expected
                                   outputs appeared
job-partial             failure    the missing outputs (the input, for them)
ended-early             failure    the unprocessed event range of the input
                                   (events processed < events expected)
empty-output            warning    nothing, probably: a low-rate skim can be
                                   empty; the zero-event outputs are listed
======================  =========  ===========================================

`attempt_findings` judges one ended attempt from its job's declared outputs
(Job.expected_outputs: names or globs, see triage.checks), the outputs it
reported (OutputFile: name, size, events) and its events processed against
the job's events expected. `submission_finding` judges a submission whose
attempts have all ended from which of its jobs produced output.
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field

SUBMISSION_FAILED = "submission-failed"
SUBMISSION_PARTIAL = "submission-partial"
JOB_FAILED = "job-failed"
JOB_PARTIAL = "job-partial"
ENDED_EARLY = "ended-early"
EMPTY_OUTPUT = "empty-output"

FAILURE = "failure"
WARNING = "warning"

REDO_INPUTS = "inputs"
REDO_OUTPUTS = "outputs"
REDO_EVENTS = "events"
REDO_NOTHING = ""

KINDS: dict[str, dict[str, str]] = {
    SUBMISSION_FAILED: {
        "title": "Whole submission failed",
        "severity": FAILURE,
        "explanation": "No job of this submission produced any output.",
        "redo": "all inputs of the submission",
    },
    SUBMISSION_PARTIAL: {
        "title": "Submission partly failed",
        "severity": FAILURE,
        "explanation": "Only some jobs of this submission produced output.",
        "redo": "the inputs of the jobs without output",
    },
    JOB_FAILED: {
        "title": "Job failed totally",
        "severity": FAILURE,
        "explanation": "None of the job's expected outputs appeared.",
        "redo": "the job's input",
    },
    JOB_PARTIAL: {
        "title": "Job failed partly",
        "severity": FAILURE,
        "explanation": "Some expected outputs are present, some are missing.",
        "redo": "the missing outputs",
    },
    ENDED_EARLY: {
        "title": "Job ended early",
        "severity": FAILURE,
        "explanation": "The job ended without notice having processed fewer events than expected.",
        "redo": "the unprocessed event range",
    },
    EMPTY_OUTPUT: {
        "title": "Output with zero events",
        "severity": WARNING,
        "explanation": "An output holds no events. Low-rate skims can be empty, so this "
        "is a warning, not a failure.",
        "redo": "nothing unless the skim should not be empty",
    },
}


@dataclass(frozen=True)
class OutputSeen:
    name: str
    size: int
    events: int | None = None


@dataclass
class Finding:
    kind: str
    detail: str
    redo_what: str = REDO_NOTHING
    redo: list[str] = field(default_factory=list)
    events_done: int | None = None
    events_expected: int | None = None

    @property
    def severity(self) -> str:
        return KINDS[self.kind]["severity"]


def _patterns(expected) -> list[str]:
    out = []
    for item in expected or []:
        if isinstance(item, str) and item:
            out.append(item)
        elif isinstance(item, dict) and item.get("name"):
            out.append(str(item["name"]))
    return out


def _matches(pattern: str, name: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(
        posixpath.basename(name), pattern
    )


def missing_outputs(expected, outputs: Sequence[OutputSeen]) -> tuple[list[str], list[str]]:
    """(present, missing) expected outputs. A pattern is present when a
    non-empty output matches it (an empty file is no output)."""
    present, missing = [], []
    for pattern in _patterns(expected):
        if any(_matches(pattern, o.name) and o.size > 0 for o in outputs):
            present.append(pattern)
        else:
            missing.append(pattern)
    return present, missing


def attempt_findings(
    *,
    job_key: str,
    claimed_success: bool,
    expected_outputs,
    outputs: Sequence[OutputSeen],
    events_processed: int | None,
    events_expected: int | None,
) -> list[Finding]:
    """What went partly wrong with one ended attempt (empty when nothing did)."""
    findings: list[Finding] = []
    present, missing = missing_outputs(expected_outputs, outputs)
    if missing and not present:
        findings.append(
            Finding(
                JOB_FAILED,
                f"none of the {len(missing)} expected outputs appeared",
                REDO_INPUTS,
                [job_key],
            )
        )
    elif missing:
        findings.append(
            Finding(
                JOB_PARTIAL,
                f"{len(present)} of {len(present) + len(missing)} expected outputs present, "
                f"{len(missing)} missing",
                REDO_OUTPUTS,
                missing,
            )
        )
    if (
        claimed_success
        and events_expected
        and events_processed is not None
        and events_processed < events_expected
    ):
        # Only an end that claimed success (exit 0) ends early *without notice*:
        # a failure says so itself, and its redo is the whole input.
        findings.append(
            Finding(
                ENDED_EARLY,
                f"processed {events_processed} of {events_expected} events",
                REDO_EVENTS,
                [f"{job_key} events {events_processed + 1}-{events_expected}"],
                events_done=events_processed,
                events_expected=events_expected,
            )
        )
    empty = sorted(o.name for o in outputs if o.events == 0 and o.size > 0)
    if empty:
        findings.append(
            Finding(
                EMPTY_OUTPUT,
                f"{len(empty)} output{'s' if len(empty) != 1 else ''} with zero events",
                REDO_NOTHING,
                empty,
            )
        )
    return findings


@dataclass(frozen=True)
class SubmissionJob:
    """One job of a submission: did its attempt in the submission produce output,
    and does the job have a good attempt by now (from any submission)?"""

    key: str
    produced_output: bool
    recovered: bool = False


def submission_finding(jobs: Sequence[SubmissionJob]) -> Finding | None:
    """Judge a submission whose attempts have all ended. The redo list keeps
    only the inputs still without a good attempt: once a retry or recovery
    produced them, nothing is left to do."""
    if not jobs:
        return None
    without = sorted(j.key for j in jobs if not j.produced_output)
    if not without:
        return None
    recovered = {j.key for j in jobs if j.recovered}
    redo = [k for k in without if k not in recovered]
    if len(without) == len(jobs):
        return Finding(
            SUBMISSION_FAILED,
            f"none of its {len(jobs)} jobs produced output",
            REDO_INPUTS,
            redo,
        )
    return Finding(
        SUBMISSION_PARTIAL,
        f"{len(without)} of {len(jobs)} jobs produced no output",
        REDO_INPUTS,
        redo,
    )
