"""Reads of stored logs."""

from dataclasses import dataclass

from logserver.models import LogChunk
from prodmon.models import Attempt


@dataclass(frozen=True)
class LogSegment:
    """Either text starting at `offset`, or a gap of `length` missing bytes."""

    offset: int
    length: int
    text: str = ""
    is_gap: bool = False


def log_tail(*, attempt: Attempt, max_bytes: int = 256 * 1024) -> list[LogSegment]:
    """The last `max_bytes` of an attempt's log as text and gap segments, in order.

    Bytes are decoded as UTF-8 with replacement characters (the stored bytes stay
    exact). Overlapping chunks are trimmed; missing ranges come back as gaps.
    """
    start = max(attempt.log_bytes - max_bytes, 0)
    chunks = (
        LogChunk.objects.filter(attempt=attempt, offset__gte=start - _max_lookback(start))
        .order_by("offset")
        .values_list("offset", "data")
    )
    segments: list[LogSegment] = []
    pos = start
    for offset, data in chunks:
        data = bytes(data)
        end = offset + len(data)
        if end <= pos:
            continue
        if offset > pos:
            segments.append(LogSegment(offset=pos, length=offset - pos, is_gap=True))
            pos = offset
        piece = data[pos - offset :]
        segments.append(
            LogSegment(offset=pos, length=len(piece), text=piece.decode("utf-8", "replace"))
        )
        pos = end
    if pos < attempt.log_bytes:
        segments.append(LogSegment(offset=pos, length=attempt.log_bytes - pos, is_gap=True))
    return segments


def _max_lookback(start: int) -> int:
    # A chunk that began before the window may still reach into it.
    from django.conf import settings

    return min(start, settings.INGEST_MAX_CHUNK_BYTES)
