"""What the action layer asks other parts of prodmon, when they provide it.

Each hook is a plain function looked up by name at call time, so the action
layer works before the other issue lands and picks it up when it does. A hook
that is absent answers "nothing known"; one that raises is logged and treated
as absent, so a bug elsewhere never blocks a retry. The contracts:

- triage.selectors.job_failure_classes(job_ids: list[int])
      -> {job_id: {"name": str, "transient": bool}}
  The failure class of each job's latest failed attempt. transient=False marks
  a permanent class: not retried unless a production manager forces it.
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

import importlib
import logging

logger = logging.getLogger(__name__)

LOST_VERDICTS = ("lost", "hung")


def _hook(module: str, name: str):
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    return getattr(mod, name, None)


def _call(module: str, name: str, default, **kwargs):
    hook = _hook(module, name)
    if hook is None:
        return default
    try:
        return hook(**kwargs)
    except Exception:  # noqa: BLE001 - another app's bug must not block an action
        logger.exception("hook %s.%s failed; treated as absent", module, name)
        return default


def failure_classes(*, job_ids: list[int]) -> dict[int, dict]:
    if not job_ids:
        return {}
    found = _call("triage.selectors", "job_failure_classes", {}, job_ids=list(job_ids)) or {}
    return {int(k): dict(v) for k, v in found.items() if v}


def error_class_available() -> bool:
    return _hook("triage.selectors", "error_class_job_ids") is not None


def error_class_job_ids(*, error_class: str, experiment_ids: set[int]) -> set[int]:
    found = _call(
        "triage.selectors",
        "error_class_job_ids",
        [],
        error_class=error_class,
        experiment_ids=set(experiment_ids),
    )
    return {int(pk) for pk in found or []}


def attempt_liveness(*, attempt_ids: list[int]) -> dict[int, str]:
    if not attempt_ids:
        return {}
    found = _call("triage.selectors", "attempt_liveness", {}, attempt_ids=list(attempt_ids))
    return {int(k): str(v) for k, v in (found or {}).items()}


def scout_resource_suggestion(*, stage_id: int) -> dict | None:
    found = _call(
        "prodmon.progress.selectors", "scout_resource_suggestion", None, stage_id=stage_id
    )
    return dict(found) if found else None
