"""The ingest hot path: apply one validated event exactly once.

Each event is applied in one transaction together with its idempotency row,
so an acknowledged event is committed, and a re-sent one is recognised and
not applied twice.
"""

import datetime as dt
import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from logserver.models import IngestEvent, IngestToken, LogChunk, token_digest
from prodmon import services as production
from prodmon.actions.tasks import stage_autolaunch_check_task
from prodmon.models import Attempt, Experiment
from prodmon.progress.tasks import stage_after_end_task
from prodmon.tasks import stage_progress_sample_task
from triage.services import liveness_on_heartbeat, liveness_on_heartbeats
from triage.tasks import attempt_classify_task, node_health_update_task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestOutcome:
    event_id: str
    status: str  # "accepted" or "duplicate"
    attempt: Attempt | None = None
    note: str = ""


class _AlreadyApplied(Exception):
    """Raised inside the event transaction to roll back a re-sent event."""


def _event_claim(*, experiment_id: int, event_id: str, kind: str, attempt_id: int) -> bool:
    """Insert the idempotency row; False when the event id was seen before.

    One statement on both PostgreSQL and SQLite (>= 3.35). A concurrent
    duplicate waits on the unique index until the first commits, then loses.
    """
    table = IngestEvent._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (experiment_id, event_id, kind, attempt_id, received_at) "  # noqa: S608
            "VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (experiment_id, event_id) DO NOTHING RETURNING id",
            [experiment_id, event_id, kind, attempt_id, timezone.now()],
        )
        return cursor.fetchone() is not None


def log_chunk_store(
    *, attempt: Attempt, offset: int, data: bytes, logged_at: dt.datetime | None = None
) -> bool:
    """Store a log chunk at its byte offset. Returns whether anything changed.

    A re-sent chunk is a no-op; a longer chunk at an offset already stored
    replaces the shorter one (a reporter that re-reads a growing file sends
    "abc" and later "abcdef" from the same offset). One statement on
    PostgreSQL and SQLite (>= 3.35): the WHERE of DO UPDATE keeps the longer.
    Indexing is enqueued once the surrounding transaction commits.
    """
    if not data:
        return False
    table = LogChunk._meta.db_table
    offset_col = connection.ops.quote_name("offset")
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (attempt_id, {offset_col}, length, data, received_at, logged_at) "  # noqa: S608
            "VALUES (%s, %s, %s, %s, %s, %s) "
            f"ON CONFLICT (attempt_id, {offset_col}) DO UPDATE SET "
            "length = excluded.length, data = excluded.data, "
            "received_at = excluded.received_at, logged_at = excluded.logged_at "
            f"WHERE {table}.length < excluded.length RETURNING id",
            [attempt.pk, offset, len(data), data, timezone.now(), logged_at],
        )
        changed = cursor.fetchone() is not None
    if changed:
        attempt_id = attempt.pk
        transaction.on_commit(lambda: _index_soon(attempt_id))
    return changed


class FollowUps(threading.local):
    """The follow-up work of events applied in one batch (the queue drain),
    gathered as their transactions commit and sent once per batch: one SADD
    for indexing, one liveness query, one task for the ended attempts,
    instead of one of each per event. Outside a batch it is inactive and
    every event sends its own."""

    def __init__(self):
        self.active = False
        self.index: set[int] = set()
        self.heartbeats: set[int] = set()
        self.ended: list[tuple[int, int]] = []

    @contextmanager
    def batched(self):
        self.active, self.index, self.heartbeats, self.ended = True, set(), set(), []
        try:
            yield self
        finally:
            self.active = False
        self._send()

    def _send(self) -> None:
        if self.index:
            from logserver.indexing import log_index_enqueue_many

            try:
                log_index_enqueue_many(attempt_ids=sorted(self.index))
            except Exception:  # noqa: BLE001
                logger.exception("could not enqueue indexing of %d attempts", len(self.index))
        if self.heartbeats:
            try:
                liveness_on_heartbeats(attempt_ids=sorted(self.heartbeats))
            except Exception:  # noqa: BLE001
                logger.exception(
                    "could not record the liveness of %d attempts", len(self.heartbeats)
                )
        if self.ended:
            from logserver.tasks import attempts_ended_task

            try:
                attempts_ended_task.delay(self.ended)
            except Exception:  # noqa: BLE001
                logger.exception("could not enqueue the follow-up work of %d ends", len(self.ended))


followups = FollowUps()


def log_chunks_store(chunks: list[tuple[Attempt, int, bytes, dt.datetime | None]]) -> int:
    """log_chunk_store for many (attempt, offset, data, logged_at) in one
    statement; at most one chunk per (attempt, offset). Returns how many changed."""
    chunks = [c for c in chunks if c[2]]
    if not chunks:
        return 0
    table = LogChunk._meta.db_table
    offset_col = connection.ops.quote_name("offset")
    now = timezone.now()
    params: list = []
    for attempt, offset, data, logged_at in chunks:
        params += [attempt.pk, offset, len(data), data, now, logged_at]
    values = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(chunks))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (attempt_id, {offset_col}, length, data, received_at, logged_at) "  # noqa: S608
            f"VALUES {values} "
            f"ON CONFLICT (attempt_id, {offset_col}) DO UPDATE SET "
            "length = excluded.length, data = excluded.data, "
            "received_at = excluded.received_at, logged_at = excluded.logged_at "
            f"WHERE {table}.length < excluded.length RETURNING attempt_id",
            params,
        )
        changed = {row[0] for row in cursor.fetchall()}
    for attempt_id in changed:
        transaction.on_commit(lambda attempt_id=attempt_id: _index_soon(attempt_id))
    return len(changed)


def heartbeats_apply(items: list[tuple[Experiment, dict, dt.datetime]]) -> list:
    """Apply validated heartbeats of distinct attempts together (the queue
    drain): one locking SELECT, one UPDATE and one log INSERT for all of them.
    Per heartbeat: its Attempt; None when the attempt is not recorded yet
    (apply that one with `event_apply`, which creates it); or the
    IdentityError that refused it."""
    specs = []
    for experiment, data, at in items:
        log = data.get("log")
        specs.append(
            production.HeartbeatSpec(
                experiment=experiment,
                identity=_identity(data),
                at=at,
                metrics=_metrics(data),
                log_end=log["offset"] + len(log["bytes"]) if log else None,
            )
        )
    attempts = production.attempts_record_heartbeats(heartbeats=specs)
    chunks = []
    for attempt, (_, data, at) in zip(attempts, items, strict=True):
        if not isinstance(attempt, Attempt):
            continue
        log = data.get("log")
        if log:
            chunks.append((attempt, log["offset"], log["bytes"], at))
        attempt_id = attempt.pk
        transaction.on_commit(lambda attempt_id=attempt_id: _after_heartbeat(attempt_id))
    log_chunks_store(chunks)
    return attempts


def starts_apply(items: list[tuple[Experiment, dict, dt.datetime]]) -> list:
    """Apply validated starts of distinct attempts together (the queue drain);
    see prodmon.services.attempts_record_starts. Per start: its Attempt, None
    (apply it with `event_apply`) or the IdentityError that refused it."""
    specs = [
        production.StartSpec(
            experiment=experiment,
            identity=_identity(data),
            at=at,
            hostname=data["host"],
            site=data.get("site", ""),
            node_properties=data.get("node"),
            cores=data.get("cores"),
            batch_id=data.get("batch_id", ""),
        )
        for experiment, data, at in items
    ]
    attempts = production.attempts_record_starts(starts=specs)
    chunks = [
        (attempt, data["log"]["offset"], data["log"]["bytes"], at)
        for attempt, (_, data, at) in zip(attempts, items, strict=True)
        if isinstance(attempt, Attempt) and data.get("log")
    ]
    log_chunks_store(chunks)
    return attempts


def ends_apply(items: list[tuple[Experiment, dict, dt.datetime]]) -> list:
    """Apply validated ends of distinct attempts together (the queue drain);
    see prodmon.services.attempts_record_ends. Per end: its Attempt, None
    (apply it with `event_apply`) or the IdentityError that refused it."""
    specs = []
    for experiment, data, at in items:
        log = data.get("log")
        specs.append(
            production.EndSpec(
                experiment=experiment,
                identity=_identity(data),
                at=at,
                exit_code=data.get("exit_code"),
                signal=data.get("signal"),
                metrics=_metrics(data),
                outputs=tuple(_outputs(data)),
                reported_success=data.get("success"),
                log_end=log["offset"] + len(log["bytes"]) if log else None,
            )
        )
    attempts = production.attempts_record_ends(ends=specs)
    chunks = []
    for attempt, (_, data, at) in zip(attempts, items, strict=True):
        if not isinstance(attempt, Attempt):
            continue
        if data.get("log"):
            chunks.append((attempt, data["log"]["offset"], data["log"]["bytes"], at))
        stage_id, attempt_id = attempt.job.stage_id, attempt.pk
        transaction.on_commit(lambda s=stage_id, a=attempt_id: _after_attempt_end(s, a))
    log_chunks_store(chunks)
    return attempts


def _index_soon(attempt_id: int) -> None:
    # Never fail an acknowledged ingest over indexing: the reconciler catches up.
    from logserver.indexing import log_index_enqueue

    if followups.active:
        followups.index.add(attempt_id)
        return
    try:
        log_index_enqueue(attempt_id=attempt_id)
    except Exception:  # noqa: BLE001
        logger.exception("could not enqueue indexing of attempt %s", attempt_id)


def _metrics(data: dict) -> production.Metrics:
    return production.Metrics(**(data.get("metrics") or {}))


def _outputs(data: dict) -> list[production.OutputSpec]:
    return [
        production.OutputSpec(
            name=o["name"],
            size=o["size"],
            checksum=o.get("checksum", ""),
            events=o.get("events"),
            parents=tuple(o.get("parents", ())),
        )
        for o in data.get("outputs", ())
    ]


def _identity(data: dict) -> production.AttemptIdentity:
    return production.AttemptIdentity(
        campaign=data["campaign"], stage=data["stage"], job=data["job"], attempt=data["attempt"]
    )


def _apply(
    *, experiment: Experiment, kind: str, data: dict, at: dt.datetime
) -> tuple[Attempt, str]:
    identity = _identity(data)
    log = data.get("log")
    log_end = log["offset"] + len(log["bytes"]) if log else None
    note = ""
    if kind == "start":
        attempt = production.attempt_record_start(
            experiment=experiment,
            identity=identity,
            at=at,
            hostname=data["host"],
            site=data.get("site", ""),
            node_properties=data.get("node"),
            cores=data.get("cores"),
            batch_id=data.get("batch_id", ""),
        )
    elif kind == "heartbeat":
        attempt = production.attempt_record_heartbeat(
            experiment=experiment, identity=identity, at=at, metrics=_metrics(data), log_end=log_end
        )
    elif kind == "end":
        outputs = _outputs(data)
        attempt, applied = production.attempt_record_end(
            experiment=experiment,
            identity=identity,
            at=at,
            exit_code=data.get("exit_code"),
            signal=data.get("signal"),
            metrics=_metrics(data),
            outputs=outputs,
            reported_success=data.get("success"),
            log_end=log_end,
        )
        if not applied:
            note = "attempt had already ended; the first end event stands"
        elif attempt.is_duplicate_completion:
            note = "duplicate completion: the job had already succeeded"
        elif getattr(attempt, "replaced_completion", False):
            note = (
                "duplicate completion: this attempt ended before the one recorded first, "
                "so it is now the job's completion and the other is the duplicate"
            )
    else:
        raise ValueError(f"unknown event kind {kind!r}")
    if log:
        log_chunk_store(attempt=attempt, offset=log["offset"], data=log["bytes"], logged_at=at)
    return attempt, note


def event_ingest(*, token: IngestToken, kind: str, data: dict) -> IngestOutcome:
    """Apply one validated event (see logserver.serializers) for the token's experiment.

    Raises prodmon.services.IdentityError when the event names an unknown or
    mismatched campaign, stage, job or attempt.
    """
    experiment = token.experiment
    at = data.get("time") or timezone.now()
    try:
        with transaction.atomic():
            attempt, note = event_apply(experiment=experiment, kind=kind, data=data, at=at)
            if not _event_claim(
                experiment_id=experiment.pk,
                event_id=data["event_id"],
                kind=kind,
                attempt_id=attempt.pk,
            ):
                raise _AlreadyApplied
    except _AlreadyApplied:
        return IngestOutcome(event_id=data["event_id"], status="duplicate")
    return IngestOutcome(event_id=data["event_id"], status="accepted", attempt=attempt, note=note)


def event_apply(
    *, experiment: Experiment, kind: str, data: dict, at: dt.datetime
) -> tuple[Attempt, str]:
    """Apply one validated event inside the caller's transaction and register
    its follow-up work for the commit. The caller records the event id (the
    inline path claims it here; the queue drain marks its queued row)."""
    attempt, note = _apply(experiment=experiment, kind=kind, data=data, at=at)
    if kind == "end" and attempt.ended_at == at:
        stage_id, attempt_id = attempt.job.stage_id, attempt.pk
        transaction.on_commit(lambda: _after_attempt_end(stage_id, attempt_id))
    elif kind == "heartbeat":
        attempt_id = attempt.pk
        transaction.on_commit(lambda: _after_heartbeat(attempt_id))
    return attempt, note


def _after_attempt_end(stage_id: int, attempt_id: int) -> None:
    # One enqueue on the request path; the worker fans out (attempt_ended_fanout).
    # Side work after the commit must never fail an acknowledged ingest:
    # with the broker down, the periodic sweeps catch up.
    from logserver.tasks import attempt_ended_task

    if followups.active:
        followups.ended.append((stage_id, attempt_id))
        return
    try:
        attempt_ended_task.delay(stage_id, attempt_id)
    except Exception:  # noqa: BLE001
        logger.exception("could not enqueue the follow-up work of attempt %s", attempt_id)


def attempt_ended_fanout(stage_id: int, attempt_id: int) -> None:
    """What an attempt's end sets off: classification, node health, the
    stage's progress sample, ETA/notifications and dependent-stage launch,
    each its own task (own retries), and indexing of the rest of the log."""
    followups = (
        (attempt_classify_task, attempt_id),
        (node_health_update_task, attempt_id),
        (stage_progress_sample_task, stage_id),
        (stage_after_end_task, stage_id),
        (stage_autolaunch_check_task, stage_id),
    )
    for task, arg in followups:
        try:
            task.delay(arg)
        except Exception:  # noqa: BLE001
            logger.exception("could not enqueue %s(%s)", task.name, arg)
    # The end closes the log: index the rest, gaps and the last partial line included.
    _index_soon(attempt_id)


def _after_heartbeat(attempt_id: int) -> None:
    # A heartbeat revives a lost attempt and clears a hung one (one UPDATE
    # when there is nothing to revive). Never fails the acknowledged event.
    if followups.active:
        followups.heartbeats.add(attempt_id)
        return
    try:
        liveness_on_heartbeat(attempt_id=attempt_id)
    except Exception:  # noqa: BLE001
        logger.exception("could not record the liveness of attempt %s", attempt_id)


def token_create(*, experiment: Experiment, name: str, scopes: list[str], created_by=None):
    """Create a token. Returns (token, raw): the raw value is shown once, never stored."""
    raw = IngestToken.generate_raw()
    unknown = set(scopes) - set(IngestToken.Scope.values)
    if unknown:
        raise ValueError(f"unknown token scopes: {', '.join(sorted(unknown))}")
    token = IngestToken.objects.create(
        experiment=experiment,
        name=name,
        prefix=raw[:10],
        token_hash=token_digest(raw),
        scopes=sorted(set(scopes)),
        created_by=created_by,
    )
    production.audit_record(
        actor=created_by,
        action="token.create",
        experiment=experiment,
        target=token,
        params={"name": name, "scopes": token.scopes},
        result="created",
    )
    return token, raw


def token_revoke(*, token: IngestToken, revoked_by=None) -> IngestToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    from logserver.auth import token_cache_forget

    token_cache_forget(token.token_hash)
    production.audit_record(
        actor=revoked_by,
        action="token.revoke",
        experiment=token.experiment,
        target=token,
        result="revoked",
    )
    return token
