"""What batch systems say about attempts: events and states from the periodic
poll, hold reasons for triage, and ending an attempt on the batch system's word
when the reporter never will."""

import logging

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from prodmon import services as production
from prodmon.actions.services.common import OPEN_STATUSES
from prodmon.models import Attempt, BatchEvent
from prodmon.submission.base import (
    BatchRef,
    BatchState,
    BatchStatus,
    SubmissionError,
    backend_get,
)
from prodmon.submission.config import setting
from prodmon.submission.spec import attempt_workdir

logger = logging.getLogger(__name__)


def _identity(attempt: Attempt) -> production.AttemptIdentity:
    job = attempt.job
    return production.AttemptIdentity(
        campaign=job.stage.campaign.name, stage=job.stage.name, job=job.key, attempt=attempt.uid
    )


def _attempt_with_identity(attempt: Attempt) -> Attempt:
    return Attempt.objects.select_related("job__stage__campaign__experiment", "submission").get(
        pk=attempt.pk
    )


def _next_seq(attempt: Attempt) -> int:
    top = BatchEvent.objects.filter(attempt=attempt).aggregate(m=Max("seq"))["m"]
    return 0 if top is None else top + 1


def attempt_end_from_batch(
    *, attempt: Attempt, status: BatchStatus, events, kind: str = "", detail: str = ""
) -> Attempt:
    """End an attempt on the batch system's word (the reporter never will):
    a submit that failed, a job removed or killed before the reporter ran."""
    attempt = _attempt_with_identity(attempt)
    with transaction.atomic():
        if kind:
            BatchEvent.objects.create(
                attempt=attempt,
                backend=attempt.submission.backend if attempt.submission else "",
                seq=_next_seq(attempt),
                kind=kind,
                at=timezone.now(),
                exit_code=status.exit_code,
                signal=status.signal,
                reason=(status.reason + (f": {detail}" if detail else ""))[:10_000],
            )
        ended, _ = production.attempt_record_end(
            experiment=attempt.job.stage.campaign.experiment,
            identity=_identity(attempt),
            at=timezone.now(),
            exit_code=status.exit_code,
            signal=status.signal,
            metrics=production.Metrics(),
            reported_success=False if status.state != BatchState.SUCCEEDED else None,
        )
        Attempt.objects.filter(pk=attempt.pk).update(batch_state=status.raw_state[:32])
    return ended


def attempt_close_stale(*, attempt: Attempt, verdict: str, actor_label: str) -> None:
    """Close an open attempt that liveness calls lost or hung, before its retry:
    ask the batch system to remove it (best effort), then end it as failed."""
    attempt = _attempt_with_identity(attempt)
    said = ""
    if attempt.batch_id and attempt.submission_id:
        try:
            said = backend_get(attempt.submission.backend).cancel(
                BatchRef(attempt.batch_id, attempt_workdir(attempt.uid))
            )
        except SubmissionError as exc:
            said = exc.message
    attempt_end_from_batch(
        attempt=attempt,
        status=BatchStatus(attempt.batch_id, BatchState.FAILED, raw_state=verdict, reason=verdict),
        events=[],
        kind=verdict,
        detail=said,
    )
    production.audit_record(
        actor=None,
        actor_label=actor_label,
        action="attempt.close",
        experiment=attempt.job.stage.campaign.experiment,
        target=attempt,
        params={"verdict": verdict, "batch_id": attempt.batch_id},
        result=said or "ended as failed",
    )


def attempt_batch_apply(
    *, attempt: Attempt, status: BatchStatus | None, events=(), grace_s: float | None = None
) -> Attempt:
    """Record what the batch system says about an open attempt: its events (an
    HTCondor event log, read again each time: already stored ones are skipped),
    its state and hold reason; and end it when the batch system says it ended
    and the reporter did not (it never started, or has been silent too long)."""
    grace = float(setting("PRODMON_BATCH_END_GRACE_SECONDS") if grace_s is None else grace_s)
    attempt = _attempt_with_identity(attempt)
    backend = attempt.submission.backend if attempt.submission else ""
    stored = BatchEvent.objects.filter(attempt=attempt).aggregate(m=Max("seq"))["m"]
    fresh = [e for e in events if stored is None or e.seq > stored]
    BatchEvent.objects.bulk_create(
        [
            BatchEvent(
                attempt=attempt,
                backend=backend,
                seq=e.seq,
                kind=e.kind[:48],
                event_code=e.event_code,
                at=e.at,
                exit_code=e.exit_code,
                signal=e.signal,
                hold_reason_code=e.hold_reason_code,
                hold_reason_subcode=e.hold_reason_subcode,
                reason=e.reason,
                data=e.data,
            )
            for e in fresh
        ],
        ignore_conflicts=True,
    )
    if status is None:
        return attempt
    update = {}
    if status.raw_state and status.raw_state[:32] != attempt.batch_state:
        update["batch_state"] = status.raw_state[:32]
        if not events:
            # Backends without an event log of their own: keep the state change.
            BatchEvent.objects.create(
                attempt=attempt,
                backend=backend,
                seq=_next_seq(attempt),
                kind=status.raw_state[:48],
                at=timezone.now(),
                exit_code=status.exit_code,
                signal=status.signal,
                hold_reason_code=status.hold_reason_code,
                hold_reason_subcode=status.hold_reason_subcode,
                reason=status.reason,
            )
    if status.state == BatchState.HELD:
        update.update(
            hold_reason_code=status.hold_reason_code,
            hold_reason_subcode=status.hold_reason_subcode,
            hold_reason=status.reason,
        )
    if update:
        Attempt.objects.filter(pk=attempt.pk).update(**update)
        for key, value in update.items():
            setattr(attempt, key, value)
    ended = status.state in BatchState.ENDED or (
        status.state == BatchState.UNKNOWN and status.raw_state == "vanished"
    )
    if ended and attempt.status in OPEN_STATUSES:
        last_word = attempt.last_heartbeat_at or attempt.started_at or attempt.created_at
        silent = (timezone.now() - last_word).total_seconds() > grace
        if attempt.status == Attempt.Status.QUEUED or silent:
            attempt = attempt_end_from_batch(attempt=attempt, status=status, events=[])
            stage_id = attempt.job.stage_id
            transaction.on_commit(lambda: _enqueue_autolaunch_check(stage_id))
    return attempt


def _enqueue_autolaunch_check(stage_id: int) -> None:
    from prodmon.actions.tasks import stage_autolaunch_check_task

    try:
        stage_autolaunch_check_task.delay(stage_id)
    except Exception:  # noqa: BLE001 - the next end or the sweep catches up
        logger.exception("could not enqueue stage_autolaunch_check_task(%s)", stage_id)


def submission_poll(*, limit: int = 5000) -> int:
    """Ask each backend about the open attempts prodmon submitted (the periodic
    poll). Returns how many attempts it heard about."""
    attempts = list(
        Attempt.objects.filter(status__in=OPEN_STATUSES, submission__isnull=False)
        .exclude(batch_id="")
        .select_related("submission", "job__stage__campaign__experiment")
        .order_by("pk")[:limit]
    )
    by_backend: dict[str, list[Attempt]] = {}
    for a in attempts:
        by_backend.setdefault(a.submission.backend, []).append(a)
    heard = 0
    for name, group in by_backend.items():
        try:
            backend = backend_get(name)
            refs = {a.pk: BatchRef(a.batch_id, attempt_workdir(a.uid)) for a in group}
            statuses = backend.status(list(refs.values()))
        except SubmissionError:
            logger.exception("cannot poll the %s backend", name)
            continue
        for a in group:
            status = statuses.get(a.batch_id)
            try:
                events = backend.events(refs[a.pk])
            except SubmissionError:
                events = []
            if status is None and not events:
                continue
            heard += 1
            with transaction.atomic():
                attempt_batch_apply(attempt=a, status=status, events=events)
    return heard
