"""Cutting stored log bytes into numbered lines and handing them to the log index.

At-least-once, and idempotent:
- after a chunk commits, the ingest path marks the attempt dirty in Redis and
  the beat task log_index_dirty_task sends one log_index_attempt_task per
  dirty attempt every PRODMON_LOG_INDEX_DEBOUNCE_SECONDS (without a Redis
  cache: the ingest path sends it, at most one per attempt while pending);
- the reconciler (a periodic task and `manage.py logindex_reconcile`) finds
  whatever is stored but not indexed, so a crash between the write and the
  index never leaves a line unsearchable;
- each pass locks the attempt's LogIndexCursor, indexes from where the last
  one stopped and moves the cursor in the same transaction; lines are keyed by
  (attempt, line number), so indexing a range twice never duplicates a line.

While an attempt runs, only complete lines of the contiguous bytes are
indexed. Once it has ended, the rest is: each gap as one pseudo-line (so line
numbers agree with the viewer) and the last line even without a newline. If
bytes later fill such a gap or extend that last line, the index is rewound to
that line and redone.
"""

import bisect
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from django.core.cache import cache, caches
from django.db import transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from logserver.conf import setting
from logserver.index import AttemptLabels, IndexLine, LogIndex, get_log_index
from logserver.lines import INDEX_MAX_LINE_CHARS, Line, index_text, level_of, split_lines
from logserver.models import LogChunk, LogIndexCursor, LogLevel, LogLineMark
from logserver.selectors import (
    _lookback,
    log_chunk_times,
    log_end,
    log_pieces,
)
from prodmon.models import Attempt

logger = logging.getLogger(__name__)

MARK_EVERY = 500
BATCH_LINES = 5000
MAX_BATCHES_PER_RUN = 200
# A UTF-8 character is at most 4 bytes: this many bytes always give the index
# its INDEX_MAX_LINE_CHARS characters.
INDEX_CAP_BYTES = INDEX_MAX_LINE_CHARS * 4


def debounce_key(attempt_id: int) -> str:
    return f"logserver:index-pending:{attempt_id}"


DIRTY_KEY = "logserver:index-dirty"


def _dirty_client():
    """The cache's Redis client when the cache is Redis (production), else None."""
    from prodmon.cache import PooledRedisCache

    backend = caches["default"]
    if not isinstance(backend, PooledRedisCache):
        return None
    return backend._cache.get_client(write=True)


def log_index_enqueue(*, attempt_id: int, force: bool = False) -> bool:
    """Schedule indexing of an attempt's log. Cheap enough for the hot path.

    With a Redis cache (production) the attempt is only marked dirty (one
    SADD); the beat task log_index_dirty_task drains the set every
    PRODMON_LOG_INDEX_DEBOUNCE_SECONDS and sends one indexing task per dirty
    attempt, so the request path never publishes a Celery message for it.
    Otherwise a task is sent, at most one per attempt while one is pending.
    Returns whether anything was scheduled."""
    from logserver.tasks import log_index_attempt_task

    if not force and not setting("PRODMON_LOG_INDEX_ON_INGEST"):
        return False
    client = None if force else _dirty_client()
    if client is not None:
        client.sadd(cache.make_key(DIRTY_KEY), attempt_id)
        return True
    delay = int(setting("PRODMON_LOG_INDEX_DEBOUNCE_SECONDS"))
    if not force and delay > 0 and not cache.add(debounce_key(attempt_id), 1, timeout=delay * 6):
        return False
    log_index_attempt_task.apply_async((attempt_id,), countdown=0 if force else delay)
    return True


def log_index_enqueue_many(*, attempt_ids: list[int]) -> None:
    """log_index_enqueue for many attempts; one SADD with a Redis cache."""
    if not attempt_ids or not setting("PRODMON_LOG_INDEX_ON_INGEST"):
        return
    client = _dirty_client()
    if client is not None:
        client.sadd(cache.make_key(DIRTY_KEY), *attempt_ids)
        return
    for attempt_id in attempt_ids:
        log_index_enqueue(attempt_id=attempt_id)


def log_index_dirty_drain(*, limit: int = 20000) -> int:
    """Send one indexing task per attempt marked dirty since the last drain.

    Marks taken here and lost before their task is sent (broker down, worker
    killed) are found by the reconciler. Returns the tasks sent."""
    from logserver.tasks import log_index_attempt_task

    client = _dirty_client()
    if client is None:
        return 0
    sent = 0
    for raw in client.spop(cache.make_key(DIRTY_KEY), limit) or ():
        log_index_attempt_task.delay(int(raw))
        sent += 1
    return sent


def attempt_labels(attempt: Attempt) -> AttemptLabels:
    job = attempt.job
    stage = job.stage
    campaign = stage.campaign
    if attempt.status == Attempt.Status.SUCCEEDED:
        outcome = "success"
    elif attempt.status == Attempt.Status.FAILED:
        outcome = "failure"
    else:
        outcome = "unknown"
    return AttemptLabels(
        attempt_id=attempt.pk,
        attempt_uid=str(attempt.uid),
        experiment_id=campaign.experiment_id,
        experiment=campaign.experiment.name,
        campaign=campaign.name,
        stage=stage.name,
        job=job.key,
        host=attempt.node.hostname if attempt.node else "",
        site=attempt.node.site if attempt.node else "",
        exit_code=attempt.exit_code if attempt.is_ended else None,
        outcome=outcome,
    )


def _attempt_for_index(attempt_id: int) -> Attempt | None:
    return (
        Attempt.objects.select_related("job__stage__campaign__experiment", "node")
        .filter(pk=attempt_id)
        .first()
    )


def _cursor_locked(attempt: Attempt, experiment_id: int) -> LogIndexCursor:
    LogIndexCursor.objects.get_or_create(attempt=attempt, defaults={"experiment_id": experiment_id})
    return LogIndexCursor.objects.select_for_update().get(attempt=attempt)


def _gap_filled(attempt_id: int, start: int, end: int) -> bool:
    return (
        LogChunk.objects.filter(
            attempt_id=attempt_id, offset__lt=end, offset__gte=max(start - _lookback(), 0)
        )
        .annotate(chunk_end=F("offset") + F("length"))
        .filter(chunk_end__gt=start)
        .exists()
    )


def _rewind_if_needed(
    cursor: LogIndexCursor, labels: AttemptLabels, index: LogIndex, end: int
) -> None:
    target: tuple[int, int] | None = None
    for line_no, offset, point_end, kind in cursor.rewind_points:
        if kind == "gap":
            changed = _gap_filled(labels.attempt_id, offset, point_end)
        else:  # the last line, indexed without its newline
            changed = end > point_end
        if changed and (target is None or line_no < target[0]):
            target = (line_no, offset)
    if target is None:
        return
    line_no, offset = target
    logger.info("re-indexing attempt %s from line %s", labels.attempt_id, line_no)
    index.delete_lines_from(labels, line_no)
    LogLineMark.objects.filter(attempt_id=labels.attempt_id, line_no__gte=line_no).delete()
    cursor.indexed_upto = offset
    cursor.next_line = line_no
    cursor.finished = False
    cursor.rewind_points = [p for p in cursor.rewind_points if p[0] < line_no]
    if cursor.first_error_line is not None and cursor.first_error_line >= line_no:
        cursor.first_error_line = None


def _time_at(times: list[tuple[int, dt.datetime]], offset: int, default: dt.datetime):
    i = bisect.bisect_right(times, offset, key=lambda t: t[0]) - 1
    return times[i][1] if i >= 0 else default


def _index_batch(attempt_id: int, index: LogIndex) -> tuple[int, bool]:
    """Index up to BATCH_LINES more lines. Returns (lines handled, more to do)."""
    with transaction.atomic():
        attempt = _attempt_for_index(attempt_id)
        if attempt is None:
            return 0, False
        labels = attempt_labels(attempt)
        cursor = _cursor_locked(attempt, labels.experiment_id)
        if cursor.purged_at is not None:
            return 0, False
        end = log_end(attempt=attempt)
        ended = attempt.is_ended
        _rewind_if_needed(cursor, labels, index, end)
        if cursor.indexed_upto >= end and (cursor.finished or not ended):
            if cursor.seen_upto != end:
                cursor.seen_upto = end
                cursor.save(update_fields=["seen_upto"])
            return 0, False

        lines: list[Line] = []
        more = False
        for line in split_lines(
            log_pieces(attempt_id=attempt_id, start=cursor.indexed_upto, end=end),
            first_number=cursor.next_line,
            cap=INDEX_CAP_BYTES,
        ):
            if not ended and (line.is_gap or not line.complete):
                break  # a gap may still be filled, a line may still grow
            if len(lines) == BATCH_LINES:
                more = True
                break
            lines.append(line)

        if lines:
            _write_lines(cursor, labels, index, lines, attempt)
        if not more:
            cursor.seen_upto = end
        if ended and not more and cursor.indexed_upto >= end and not cursor.finished:
            cursor.finished = True
            index.attempt_ended(labels)
        cursor.updated_at = timezone.now()
        cursor.save()
        return len(lines), more


def _write_lines(
    cursor: LogIndexCursor,
    labels: AttemptLabels,
    index: LogIndex,
    lines: Sequence[Line],
    attempt: Attempt,
) -> None:
    times = log_chunk_times(attempt_id=labels.attempt_id, start=lines[0].offset)
    default_time = attempt.started_at or attempt.created_at or timezone.now()
    entries = []
    for line in lines:
        if line.is_gap:
            cursor.rewind_points.append([line.number, line.offset, line.end, "gap"])
            continue
        if not line.complete:
            cursor.rewind_points.append([line.number, line.offset, line.end, "partial"])
        text = index_text(line.data)
        level = level_of(text)
        if level == LogLevel.ERROR and cursor.first_error_line is None:
            cursor.first_error_line = line.number
        entries.append(
            IndexLine(
                line_no=line.number,
                offset=line.offset,
                text=text,
                timestamp=_time_at(times, line.offset, default_time),
                level=level,
            )
        )
    if entries:
        index.index_lines(labels, entries)
    marks = [
        LogLineMark(attempt_id=labels.attempt_id, line_no=line.number, offset=line.offset)
        for line in lines
        if (line.number - 1) % MARK_EVERY == 0
    ]
    if marks:
        LogLineMark.objects.bulk_create(
            marks,
            update_conflicts=True,
            unique_fields=["attempt", "line_no"],
            update_fields=["offset"],
        )
    cursor.indexed_upto = lines[-1].end
    cursor.next_line = lines[-1].number + 1


def log_index_attempt(
    *, attempt_id: int, index: LogIndex | None = None, max_batches: int = MAX_BATCHES_PER_RUN
) -> int:
    """Index whatever of the attempt's log is not indexed yet. Returns lines handled."""
    index = index or get_log_index()
    total = 0
    for _ in range(max_batches):
        written, more = _index_batch(attempt_id, index)
        total += written
        if not more:
            return total
    # A very large log: hand the rest to another run instead of hogging a worker.
    log_index_enqueue(attempt_id=attempt_id, force=True)
    return total


def log_index_stale_attempt_ids(*, limit: int = 1000) -> list[int]:
    """Attempts with stored log bytes the index has not looked at, or whose
    end has not been indexed yet."""
    live = LogIndexCursor.objects.filter(purged_at__isnull=True)
    never = Attempt.objects.filter(log_bytes__gt=0, log_index_cursor__isnull=True).values_list(
        "pk", flat=True
    )
    grown = live.filter(attempt__log_bytes__gt=F("seen_upto")).values_list("attempt_id", flat=True)
    unfinished = live.filter(finished=False, attempt__status__in=Attempt.ENDED).values_list(
        "attempt_id", flat=True
    )
    # Finished logs whose gap or last line may have changed since.
    touched = (
        live.filter(finished=True)
        .exclude(rewind_points=[])
        .filter(
            Exists(
                LogChunk.objects.filter(
                    attempt_id=OuterRef("attempt_id"), received_at__gt=OuterRef("updated_at")
                )
            )
        )
        .values_list("attempt_id", flat=True)
    )
    ids: set[int] = set()
    for qs in (never, grown, unfinished, touched):
        ids.update(qs.order_by()[:limit])
    return sorted(ids)[:limit]


@dataclass(frozen=True)
class ReconcileReport:
    attempts: int
    lines: int
    failed: int


def log_index_reconcile(*, limit: int = 1000, index: LogIndex | None = None) -> ReconcileReport:
    """Index everything stored but not indexed (the at-least-once backstop)."""
    index = index or get_log_index()
    attempts = lines = failed = 0
    for attempt_id in log_index_stale_attempt_ids(limit=limit):
        try:
            lines += log_index_attempt(attempt_id=attempt_id, index=index)
            attempts += 1
        except Exception:  # noqa: BLE001 - one bad attempt must not stop the sweep
            failed += 1
            logger.exception("indexing attempt %s failed; the next reconcile retries", attempt_id)
    return ReconcileReport(attempts=attempts, lines=lines, failed=failed)


def log_index_rebuild(*, attempt_ids: Sequence[int] | None = None) -> int:
    """Forget what was indexed (e.g. after switching PRODMON_LOG_INDEX) so the
    reconciler indexes it again into the current backend. Returns cursors reset."""
    index = get_log_index()
    cursors = LogIndexCursor.objects.filter(purged_at__isnull=True)
    if attempt_ids is not None:
        cursors = cursors.filter(attempt_id__in=attempt_ids)
    ids = list(cursors.values_list("attempt_id", flat=True))
    for i in range(0, len(ids), 500):
        batch = ids[i : i + 500]
        attempts = Attempt.objects.select_related(
            "job__stage__campaign__experiment", "node"
        ).filter(pk__in=batch)
        with transaction.atomic():
            index.delete_attempts([attempt_labels(a) for a in attempts])
            LogLineMark.objects.filter(attempt_id__in=batch).delete()
            LogIndexCursor.objects.filter(attempt_id__in=batch).delete()
    return len(ids)
