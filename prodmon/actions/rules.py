"""The retry rules, as pure functions: may this job be retried, and with what.

Used both to preview (the confirmation page's counts) and to decide (under the
job's row lock, in prodmon.actions.services), so the two always agree.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

from prodmon.actions.hooks import LOST_VERDICTS
from prodmon.models import Attempt, Job, Stage
from prodmon.submission.config import setting

# Stages that take no new submissions, and why.
CLOSED_STAGE_STATES = {
    Stage.State.HELD: "the stage is held",
    Stage.State.ABORTED: "the stage was aborted",
    Stage.State.FINISHING: "the stage is finishing what is running",
    Stage.State.COMPLETED: "the stage is completed",
}


@dataclass(frozen=True)
class Refusal:
    code: str  # stage_closed, succeeded, open_attempt, max_attempts, permanent
    message: str

    LABELS = {
        "stage_closed": "stage takes no submissions",
        "succeeded": "already succeeded",
        "open_attempt": "an attempt is still queued or running",
        "max_attempts": "max attempts reached",
        "permanent": "permanent failure class (a production manager can force)",
    }

    @property
    def label(self) -> str:
        return self.LABELS.get(self.code, self.code)


def retry_refusal(
    *,
    job: Job,
    stage_state: str,
    open_attempts: Sequence[Attempt],
    liveness: dict[int, str],
    failure_class: dict | None,
    force: bool,
    allow_succeeded: bool = False,
) -> Refusal | None:
    """Why this job may not get a new attempt now, or None when it may.

    Open attempts that liveness calls lost or hung do not block: the retry
    closes them first. `force` (a production manager's) overrides only a
    permanent failure class; max attempts always holds.
    """
    if stage_state in CLOSED_STAGE_STATES:
        return Refusal("stage_closed", CLOSED_STAGE_STATES[stage_state])
    if job.good_attempt_id is not None and not allow_succeeded:
        return Refusal("succeeded", "the job has already succeeded")
    blocking = [a for a in open_attempts if liveness.get(a.pk) not in LOST_VERDICTS]
    if blocking:
        a = blocking[0]
        return Refusal("open_attempt", f"attempt #{a.number} is still {a.status}")
    if job.attempt_count >= job.max_attempts:
        return Refusal(
            "max_attempts",
            f"max attempts reached ({job.attempt_count} of {job.max_attempts})",
        )
    if failure_class and failure_class.get("transient") is False and not force:
        name = failure_class.get("name") or "unnamed"
        return Refusal(
            "permanent",
            f"failure class {name!r} is permanent; a production manager can force a retry",
        )
    return None


@dataclass(frozen=True)
class Resources:
    memory_mb: int
    walltime_s: int
    basis: str  # how they were chosen, for the audit log


def resources_for_retry(
    *,
    stage: Stage,
    last_attempt: Attempt | None,
    more: bool,
    suggestion: dict | None = None,
) -> Resources:
    """What the next attempt asks for.

    Without `more`, the same as the last attempt (or the stage's defaults).
    With `more`, a scout suggestion when there is one; otherwise PanDA's
    increase-memory idea: the larger of the last request times
    PRODMON_RETRY_MEMORY_FACTOR (1.5) and 1.2 × the peak RSS the last attempt
    reached, capped at PRODMON_RETRY_MEMORY_MAX_MB; wall time likewise times
    PRODMON_RETRY_WALLTIME_FACTOR, capped at PRODMON_RETRY_WALLTIME_MAX_S.
    Never less than before.
    """
    memory = (last_attempt and last_attempt.request_memory_mb) or stage.request_memory_mb
    walltime = (last_attempt and last_attempt.request_walltime_s) or stage.request_walltime_s
    if not more:
        return Resources(memory, walltime, "same as the last attempt")
    mem_cap = int(setting("PRODMON_RETRY_MEMORY_MAX_MB"))
    time_cap = int(setting("PRODMON_RETRY_WALLTIME_MAX_S"))
    suggestion = suggestion or {}
    if suggestion.get("memory_mb") or suggestion.get("walltime_s"):
        new_memory = max(memory, int(suggestion.get("memory_mb") or memory))
        new_walltime = max(walltime, int(suggestion.get("walltime_s") or walltime))
        return Resources(
            min(new_memory, max(mem_cap, memory)),
            min(new_walltime, max(time_cap, walltime)),
            "scout suggestion",
        )
    peak_mb = (last_attempt.peak_rss_bytes or 0) / 2**20 if last_attempt else 0
    new_memory = math.ceil(
        max(memory * float(setting("PRODMON_RETRY_MEMORY_FACTOR")), peak_mb * 1.2)
    )
    new_walltime = math.ceil(walltime * float(setting("PRODMON_RETRY_WALLTIME_FACTOR")))
    return Resources(
        max(memory, min(new_memory, mem_cap)),
        max(walltime, min(new_walltime, time_cap)),
        "increased by the retry factors",
    )
