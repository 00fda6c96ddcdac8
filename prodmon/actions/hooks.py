"""What the action layer asks other parts of prodmon: triage's selectors and
the progress work's scout suggestion, imported directly (selectors only, never
another app's views). A call that raises is logged and answered with "nothing
known", so a bug elsewhere never blocks a retry. The contracts:

- triage.selectors.job_failure_classes(job_ids: list[int])
      -> {job_id: {"name": str, "transient": bool}}
  The failure class of each job's latest classified failed attempt.
  transient=False marks a permanent class: not retried unless a production
  manager forces it.
- triage.selectors.error_class_job_ids(error_class: str, experiment_ids: set[int])
      -> iterable of job ids
  The jobs whose latest failure is in that class: the bulk retry's "error class" filter.
- triage.selectors.attempt_liveness(attempt_ids: list[int])
      -> {attempt_id: "ok" | "lost" | "hung"}
  Open attempts that are lost or hung can be retried (they are closed first).
- prodmon.progress.selectors.scout_resource_suggestion(stage_id: int)
      -> {"memory_mb": int, "walltime_s": int} (either key may be missing) or None
  Suggested requests from scout jobs, used by "retry with more memory / time".
- triage.selectors.node_exclusion_list() -> list[str], see prodmon.submission.base.
"""

import logging

from prodmon.progress import selectors as progress_selectors
from triage import selectors as triage_selectors

logger = logging.getLogger(__name__)

LOST_VERDICTS = ("lost", "hung")


def _call(fn, default, **kwargs):
    try:
        return fn(**kwargs)
    except Exception:  # noqa: BLE001 - another app's bug must not block an action
        logger.exception("%s.%s failed; treated as nothing known", fn.__module__, fn.__name__)
        return default


def failure_classes(*, job_ids: list[int]) -> dict[int, dict]:
    if not job_ids:
        return {}
    found = _call(triage_selectors.job_failure_classes, {}, job_ids=list(job_ids)) or {}
    return {int(k): dict(v) for k, v in found.items() if v}


def error_class_job_ids(*, error_class: str, experiment_ids: set[int]) -> set[int]:
    found = _call(
        triage_selectors.error_class_job_ids,
        [],
        error_class=error_class,
        experiment_ids=set(experiment_ids),
    )
    return {int(pk) for pk in found or []}


def attempt_liveness(*, attempt_ids: list[int]) -> dict[int, str]:
    if not attempt_ids:
        return {}
    found = _call(triage_selectors.attempt_liveness, {}, attempt_ids=list(attempt_ids))
    return {int(k): str(v) for k, v in (found or {}).items()}


def scout_resource_suggestion(*, stage_id: int) -> dict | None:
    found = _call(progress_selectors.scout_resource_suggestion, None, stage_id=stage_id)
    return dict(found) if found else None
