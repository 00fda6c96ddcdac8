"""The ingest queue: accept an event with one durable INSERT, apply it later in batches.

With PRODMON_INGEST_MODE=queued an ingest request validates its event (bad
input still gets its 4xx), then inserts the event's IngestEvent row with state
"queued" and the validated event as `payload`, and answers 202. That INSERT is
also the idempotency check: a re-sent event id hits the unique constraint and
is answered as a duplicate, queued or applied. Once the INSERT has committed
the event is durable: nothing acknowledged is lost if every process dies.

`queue_drain()` applies queued events in arrival order (by row id), up to
PRODMON_INGEST_DRAIN_BATCH in one transaction: one commit and one bookkeeping
UPDATE per batch instead of per event. A batch is applied optimistically in
one savepoint; if any event of it fails, the batch is re-applied event by
event, each in its own savepoint, so a bad event (an unknown attempt, say) is
marked "rejected" with the reason and the rest are applied. A database error
(lost connection, deadlock) rolls the whole batch back; it stays queued and is
retried. One drain runs at a time (a PostgreSQL advisory lock; on SQLite the
IMMEDIATE transaction), which is what keeps events of one attempt in order.

Who drains: `manage.py ingest_drain` (a long-running process: deploy/systemd)
and, as a safety net, beat's logserver.ingest_drain_task; they share the lock.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from logserver.models import IngestEvent, IngestToken
from logserver.services import (
    IngestOutcome,
    ends_apply,
    event_apply,
    followups,
    heartbeats_apply,
    starts_apply,
)
from prodmon.models import Experiment
from prodmon.services import IdentityError

logger = logging.getLogger(__name__)

DRAIN_LOCK_KEY = 0x70726F646D6F6E  # "prodmon": the advisory-lock key of the drain
QUEUED = IngestEvent.State.QUEUED
_local_lock = threading.Lock()


def queued_mode() -> bool:
    return getattr(settings, "PRODMON_INGEST_MODE", "inline") == "queued"


# --- the payload: a validated event as JSON text -----------------------------


def payload_encode(data: dict) -> str:
    """The validated event (serializer output) as JSON: the time as ISO 8601,
    the attempt uuid as text and the log bytes as base64."""
    out = dict(data)
    if out.get("time") is not None:
        out["time"] = out["time"].isoformat()
    out["attempt"] = str(out["attempt"])
    log = out.get("log")
    if log is not None:
        out["log"] = {"offset": log["offset"], "b64": base64.b64encode(log["bytes"]).decode()}
    return json.dumps(out, separators=(",", ":"))


def payload_decode(text: str) -> dict:
    data = json.loads(text)
    if data.get("time") is not None:
        data["time"] = parse_datetime(data["time"])
    data["attempt"] = uuid.UUID(data["attempt"])
    log = data.get("log")
    if log is not None:
        data["log"] = {"offset": log["offset"], "bytes": base64.b64decode(log["b64"])}
    return data


# --- accepting ---------------------------------------------------------------


def _insert_sql(rows: int) -> str:
    table = IngestEvent._meta.db_table
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, '')"] * rows)
    return (
        f"INSERT INTO {table} (experiment_id, event_id, kind, received_at, state, payload, note) "  # noqa: S608
        f"VALUES {values} ON CONFLICT (experiment_id, event_id) DO NOTHING RETURNING event_id"
    )


def events_enqueue(*, token: IngestToken, events: list[tuple[str, dict]]) -> list[IngestOutcome]:
    """Queue validated (kind, data) events of the token's experiment with one
    INSERT; an outcome per event, in order: "accepted" (queued) or "duplicate".
    The same event id twice in one call is queued once."""
    if not events:
        return []
    now = timezone.now()
    params: list = []
    for kind, data in events:
        params += [token.experiment_id, data["event_id"], kind, now, QUEUED, payload_encode(data)]
    # One statement, committed on its own (autocommit): no BEGIN/COMMIT round trips.
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(len(events)), params)
        inserted = {row[0] for row in cursor.fetchall()}
    outcomes, seen = [], set()
    for _, data in events:
        event_id = data["event_id"]
        fresh = event_id in inserted and event_id not in seen
        seen.add(event_id)
        outcomes.append(
            IngestOutcome(event_id=event_id, status="accepted" if fresh else "duplicate")
        )
    return outcomes


# --- applying ----------------------------------------------------------------


@dataclass
class DrainResult:
    applied: int = 0
    rejected: int = 0
    busy: bool = False  # another drain holds the lock

    @property
    def done(self) -> int:
        return self.applied + self.rejected


@dataclass
class _Row:
    id: int
    experiment_id: int
    kind: str
    received_at: dt.datetime
    payload: str
    state: str = QUEUED
    attempt_id: int | None = None
    note: str = ""
    data: dict | None = None  # the decoded payload


def _drain_lock() -> bool:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [DRAIN_LOCK_KEY])
            return bool(cursor.fetchone()[0])
    return True  # SQLite: the IMMEDIATE transaction already holds the write lock


def _queued(limit: int) -> list[_Row]:
    table = IngestEvent._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, experiment_id, kind, received_at, payload FROM {table} "  # noqa: S608
            "WHERE state = %s ORDER BY id LIMIT %s",
            [QUEUED, limit],
        )
        return [_Row(*row) for row in cursor.fetchall()]


def _apply_row(row: _Row, experiments: dict[int, Experiment]) -> None:
    experiment = _experiment(row, experiments)
    data = row.data if row.data is not None else payload_decode(row.payload)
    at = data.get("time") or row.received_at
    attempt, note = event_apply(experiment=experiment, kind=row.kind, data=data, at=at)
    row.state, row.attempt_id, row.note = IngestEvent.State.APPLIED, attempt.pk, note


def _apply_batch(rows: list[_Row], experiments: dict[int, Experiment]) -> None:
    """Apply a batch in rounds: round k holds the k-th event of each attempt,
    so an attempt's events keep their order. In a round the starts, then the
    ends, then the heartbeats are applied together (starts_apply: new attempts
    of new jobs; ends_apply: open attempts of jobs with no good attempt, one
    per job; heartbeats_apply: attempts already recorded); what those leave is
    applied one by one. Events of different attempts commute, as they do
    between concurrent requests in the inline mode."""
    rounds: list[list[_Row]] = []
    seen: dict[str, int] = {}
    for row in rows:
        row.data = payload_decode(row.payload)
        key = str(row.data["attempt"])
        k = seen.get(key, 0)
        seen[key] = k + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(row)
    for group in rounds:
        starts = [row for row in group if row.kind == "start"]
        if starts:
            _apply_together(starts_apply, starts, experiments)
        ends = [row for row in group if row.kind == "end"]
        if ends:
            _apply_together(ends_apply, ends, experiments)
        beats = [row for row in group if row.kind == "heartbeat"]
        if beats:
            _apply_together(heartbeats_apply, beats, experiments)


def _apply_together(apply, group: list[_Row], experiments: dict[int, Experiment]) -> None:
    """Events of one kind and distinct attempts through `apply` (starts_apply,
    ends_apply, heartbeats_apply); those it leaves (None) one by one."""
    items = [
        (_experiment(row, experiments), row.data, row.data.get("time") or row.received_at)
        for row in group
    ]
    attempts = apply(items)
    for row, attempt in zip(group, attempts, strict=True):
        if attempt is None:  # not recorded yet: the single path creates it
            _apply_row(row, experiments)
        elif isinstance(attempt, IdentityError):
            _reject(row, f"{attempt.field}: {attempt.message}")
        else:
            row.state, row.attempt_id, row.note = IngestEvent.State.APPLIED, attempt.pk, ""


def _experiment(row: _Row, experiments: dict[int, Experiment]) -> Experiment:
    experiment = experiments.get(row.experiment_id)
    if experiment is None:
        experiment = experiments[row.experiment_id] = Experiment.objects.get(pk=row.experiment_id)
    return experiment


def _reject(row: _Row, message: str) -> None:
    row.state, row.note = IngestEvent.State.REJECTED, message


def _is_transient(exc: DatabaseError) -> bool:
    return isinstance(exc, OperationalError | InterfaceError)


def _apply_one_by_one(rows: list[_Row], experiments: dict[int, Experiment]) -> None:
    for row in rows:
        try:
            with transaction.atomic():
                _apply_row(row, experiments)
        except IdentityError as exc:
            _reject(row, f"{exc.field}: {exc.message}")
        except DatabaseError as exc:
            if _is_transient(exc):
                raise  # the batch stays queued and is retried
            logger.exception("queued event %s could not be applied", row.id)
            _reject(row, f"database error: {type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug must not wedge the queue behind one event
            logger.exception("queued event %s could not be applied", row.id)
            _reject(row, f"internal error: {type(exc).__name__}: {exc}")


def _mark(rows: list[_Row]) -> None:
    """One UPDATE for the whole batch: state, attempt, note; payload cleared
    once applied (kept for a rejected event, to be looked at or re-queued)."""
    table = IngestEvent._meta.db_table
    values = ", ".join(["(%s, %s, %s, %s)"] * len(rows))
    params: list = []
    for row in rows:
        params += [row.id, row.state, row.attempt_id, row.note]
    now = timezone.now()
    cast = "::bigint" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH v(id, state, attempt_id, note) AS (VALUES {values}) "  # noqa: S608
            f"UPDATE {table} SET state = v.state, attempt_id = v.attempt_id{cast}, "
            f"note = v.note, applied_at = %s, "
            f"payload = CASE WHEN v.state = %s THEN NULL ELSE {table}.payload END "
            f"FROM v WHERE {table}.id = v.id{cast}",
            [*params, now, IngestEvent.State.APPLIED],
        )


def queue_drain(*, limit: int | None = None) -> DrainResult:
    """Apply up to `limit` queued events (PRODMON_INGEST_DRAIN_BATCH) in one
    transaction. Returns what was done; `busy` when another drain runs."""
    limit = limit or settings.PRODMON_INGEST_DRAIN_BATCH
    if not _local_lock.acquire(blocking=False):
        return DrainResult(busy=True)
    try:
        with followups.batched(), transaction.atomic():
            if not _drain_lock():
                return DrainResult(busy=True)
            rows = _queued(limit)
            if not rows:
                return DrainResult()
            experiments: dict[int, Experiment] = {}
            try:
                with transaction.atomic():
                    _apply_batch(rows, experiments)
            except DatabaseError as exc:
                if _is_transient(exc):
                    raise
                _apply_one_by_one(rows, experiments)
            except Exception:  # noqa: BLE001 - one bad event: redo the batch one by one
                _apply_one_by_one(rows, experiments)
            _mark(rows)
        rejected = sum(row.state == IngestEvent.State.REJECTED for row in rows)
        if rejected:
            logger.warning("ingest queue: %d of %d events rejected", rejected, len(rows))
        return DrainResult(applied=len(rows) - rejected, rejected=rejected)
    finally:
        _local_lock.release()


def queue_drain_all(*, time_budget: float | None = None) -> DrainResult:
    """Drain until the queue is empty (or the time budget is spent)."""
    total = DrainResult()
    deadline = None if time_budget is None else time.monotonic() + time_budget
    while True:
        result = queue_drain()
        total.applied += result.applied
        total.rejected += result.rejected
        if result.busy:
            total.busy = True
            return total
        if result.done == 0 or (deadline is not None and time.monotonic() > deadline):
            return total


# --- looking at it -------------------------------------------------------------


@dataclass(frozen=True)
class QueueStats:
    queued: int
    oldest_age_s: float | None
    rejected: int


def queue_stats() -> QueueStats:
    qs = IngestEvent.objects.filter(state=QUEUED)
    oldest = qs.order_by("id").values_list("received_at", flat=True).first()
    age = None if oldest is None else max((timezone.now() - oldest).total_seconds(), 0.0)
    return QueueStats(
        queued=qs.count(),
        oldest_age_s=age,
        rejected=IngestEvent.objects.filter(state=IngestEvent.State.REJECTED).count(),
    )


def rejected_requeue(*, experiment: Experiment | None = None, ids=None, actor=None) -> int:
    """Put rejected events back in the queue (after fixing their cause, e.g.
    creating a missing stage), all of an experiment's or those with the row
    `ids`. Audited per experiment. Returns how many."""
    from prodmon.services import audit_record

    qs = IngestEvent.objects.filter(state=IngestEvent.State.REJECTED, payload__isnull=False)
    if experiment is not None:
        qs = qs.filter(experiment=experiment)
    if ids is not None:
        qs = qs.filter(pk__in=list(ids))
    total = 0
    for experiment_id in sorted(set(qs.values_list("experiment_id", flat=True))):
        of_experiment = qs.filter(experiment_id=experiment_id)
        event_ids = sorted(of_experiment.values_list("event_id", flat=True))
        count = of_experiment.update(state=QUEUED, note="", applied_at=None)
        total += count
        audit_record(
            actor=actor,
            action="ingest.requeue",
            experiment=Experiment.objects.get(pk=experiment_id),
            params={"events": event_ids[:100], "count": count},
            result=f"{count} rejected events queued again",
        )
    return total
