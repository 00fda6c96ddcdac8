"""Writes of the action layer: retries, recoveries, stage launches and stage
state changes, each recorded in the audit log.

How a click never becomes two submissions:
- the form carries an idempotency key; BulkAction.idempotency_key is unique, so
  a double click or a re-sent form finds the first request instead of making one;
- each job is handled under its row lock (select_for_update on the Job, then
  its attempts: the lock order of prodmon.services), and a job with a queued or
  running attempt is refused;
- the database backs this up: at most one open attempt per job among those the
  submission layer queued (constraint attempt_one_open_submitted).

A queued attempt is committed before the batch system hears of it, so a crash
between the two leaves a queued attempt the poll can see, never a batch job
prodmon does not know about.

Modules: requests (what operators ask for), runner (running a request, job by
job), batch (what batch systems say: the poll, hold reasons), stages (hold,
release, finish, abort, autolaunch), common (shared small pieces).
"""

from prodmon.actions.services.batch import attempt_batch_apply, submission_poll
from prodmon.actions.services.common import ActionRefused
from prodmon.actions.services.requests import (
    bulk_action_cancel,
    bulk_retry_request,
    job_retry_request,
    recovery_request,
    stage_launch_request,
)
from prodmon.actions.services.runner import (
    bulk_action_kick,
    bulk_action_run,
    bulk_action_run_due,
    thread_runner_stop,
)
from prodmon.actions.services.stages import (
    stage_abort,
    stage_autolaunch_check,
    stage_finish,
    stage_finishing_check,
    stage_hold,
    stage_release,
)

__all__ = [
    "ActionRefused",
    "attempt_batch_apply",
    "bulk_action_cancel",
    "bulk_action_kick",
    "bulk_action_run",
    "bulk_action_run_due",
    "bulk_retry_request",
    "job_retry_request",
    "recovery_request",
    "stage_abort",
    "stage_autolaunch_check",
    "stage_finish",
    "stage_finishing_check",
    "stage_hold",
    "stage_launch_request",
    "stage_release",
    "submission_poll",
    "thread_runner_stop",
]
