"""Reads of stored logs: reassembled bytes, numbered lines for the viewer,
search through the configured log index, and full logs."""

import datetime as dt
from collections import deque
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import F, Max, Sum
from django.urls import reverse

from logserver import ansi, highlight
from logserver.index import ParsedQuery, SearchQuery, get_log_index
from logserver.lines import Line, decode, level_of, split_lines
from logserver.models import FullLog, LogChunk, LogIndexCursor, LogLevel, LogLineMark
from logserver.reassembly import Piece, reassemble
from prodmon import selectors as production
from prodmon.models import Attempt

# Chunks are at most INGEST_MAX_CHUNK_BYTES long; looking this far back for a
# chunk that starts before a window keeps the scan on the (attempt, offset)
# index even if that limit was once larger.
MIN_LOOKBACK = 8 * 1024 * 1024
READ_WINDOW = 1024 * 1024
PAGE_LINES = 2000
DISPLAY_CAP = 5000  # bytes of a line shown before "show full line"
FULL_LINE_CAP = 1024 * 1024  # what "show full line" sends at most


@dataclass(frozen=True)
class LogSegment:
    """Either text starting at `offset`, or a gap of `length` missing bytes."""

    offset: int
    length: int
    text: str = ""
    is_gap: bool = False


def _lookback() -> int:
    return max(settings.INGEST_MAX_CHUNK_BYTES, MIN_LOOKBACK)


def log_chunks_overlapping(*, attempt_id: int, start: int, end: int) -> list[tuple[int, bytes]]:
    """(offset, bytes) of every stored chunk that overlaps [start, end)."""
    rows = (
        LogChunk.objects.filter(
            attempt_id=attempt_id, offset__lt=end, offset__gte=max(start - _lookback(), 0)
        )
        .annotate(chunk_end=F("offset") + F("length"))
        .filter(chunk_end__gt=start)
        .order_by("offset")
        .values_list("offset", "data")
    )
    return [(offset, bytes(data)) for offset, data in rows]


def log_stored_end(*, attempt_id: int) -> int:
    end = LogChunk.objects.filter(attempt_id=attempt_id).aggregate(
        end=Max(F("offset") + F("length"))
    )["end"]
    return end or 0


def log_end(*, attempt: Attempt) -> int:
    """Where the log ends as far as anyone told us: the furthest stored byte or
    the furthest offset an event announced, whichever is later."""
    return max(attempt.log_bytes, log_stored_end(attempt_id=attempt.pk))


def log_pieces(
    *, attempt_id: int, start: int, end: int, window: int = READ_WINDOW
) -> Iterator[Piece]:
    """The reassembled bytes of [start, end) as data pieces and gaps, read
    lazily one window at a time (memory stays at about one window). A gap is
    one piece however many windows it spans."""
    gap_start: int | None = None
    for piece in _window_pieces(attempt_id, start, end, window):
        if piece.is_gap:
            if gap_start is None:
                gap_start = piece.offset
            continue
        if gap_start is not None:
            yield Piece(gap_start, piece.offset - gap_start, None)
            gap_start = None
        yield piece
    if gap_start is not None:
        yield Piece(gap_start, end - gap_start, None)


def _window_pieces(attempt_id: int, start: int, end: int, window: int) -> Iterator[Piece]:
    pos = start
    while pos < end:
        hi = min(pos + window, end)
        chunks = log_chunks_overlapping(attempt_id=attempt_id, start=pos, end=hi)
        if not chunks:
            # Skip a long gap in one step instead of one query per window.
            following = (
                LogChunk.objects.filter(attempt_id=attempt_id, offset__gte=hi)
                .order_by("offset")
                .values_list("offset", flat=True)
                .first()
            )
            hi = min(following if following is not None else end, end)
            yield Piece(pos, hi - pos, None)
            pos = hi
            continue
        yield from reassemble(chunks, pos, hi)
        pos = hi


def log_bytes_iter(*, attempt: Attempt) -> Iterator[bytes]:
    """The whole reassembled log, a missing range shown as a marker line."""
    for piece in log_pieces(attempt_id=attempt.pk, start=0, end=log_end(attempt=attempt)):
        if piece.is_gap:
            yield f"\n[prodmon: {piece.length} bytes missing here]\n".encode()
        else:
            yield piece.data


def log_tail(*, attempt: Attempt, max_bytes: int = 256 * 1024) -> list[LogSegment]:
    """The last `max_bytes` of an attempt's log as text and gap segments, in order.

    Bytes are decoded as UTF-8 with replacement characters (the stored bytes stay
    exact). Overlapping and re-sent chunks are reassembled; missing ranges come
    back as gaps.
    """
    end = attempt.log_bytes
    start = max(end - max_bytes, 0)
    chunks = log_chunks_overlapping(attempt_id=attempt.pk, start=start, end=end)
    return [
        LogSegment(offset=p.offset, length=p.length, is_gap=True)
        if p.is_gap
        else LogSegment(offset=p.offset, length=p.length, text=p.data.decode("utf-8", "replace"))
        for p in reassemble(chunks, start, end)
    ]


def log_chunk_times(*, attempt_id: int, start: int) -> list[tuple[int, dt.datetime]]:
    """(offset, time written) of the chunks reaching past `start`, by offset."""
    rows = (
        LogChunk.objects.filter(attempt_id=attempt_id)
        .annotate(chunk_end=F("offset") + F("length"))
        .filter(chunk_end__gt=start)
        .order_by("offset")
        .values_list("offset", "logged_at", "received_at")
    )
    return [(offset, logged or received) for offset, logged, received in rows]


# --- the viewer ---------------------------------------------------------------


@dataclass
class ViewLine:
    number: int
    offset: int
    length: int
    segments: list[tuple[str, str, bool]]  # (text, css classes, is a search match)
    is_gap: bool = False
    partial: bool = False
    truncated: bool = False
    content_length: int = 0
    level: int = LogLevel.INFO

    @property
    def level_name(self) -> str:
        return LogLevel(self.level).label

    def as_json(self) -> dict:
        return {
            "n": self.number,
            "offset": self.offset,
            "length": self.length,
            "gap": self.is_gap,
            "partial": self.partial,
            "truncated": self.truncated,
            "content_length": self.content_length,
            "level": self.level_name,
            "segments": [[text, css, hit] for text, css, hit in self.segments],
        }


@dataclass
class LogPage:
    lines: list[ViewLine]
    first: int
    last: int
    known_lines: int
    log_bytes: int
    at_end: bool
    next_offset: int
    next_line: int
    first_error_line: int | None = None
    purged: bool = False

    @property
    def has_prev(self) -> bool:
        return self.first > 1

    @property
    def prev_from(self) -> int:
        return max(1, self.first - PAGE_LINES)

    @property
    def next_from(self) -> int:
        return self.last + 1


def _view_lines(
    lines: list[Line], terms: tuple[str, ...], style: ansi.Style = ansi.PLAIN
) -> list[ViewLine]:
    out = []
    for line in lines:
        if line.is_gap:
            text = f"[… {line.length:,} bytes missing …]"
            out.append(
                ViewLine(
                    number=line.number,
                    offset=line.offset,
                    length=line.length,
                    segments=[(text, "gap", False)],
                    is_gap=True,
                )
            )
            continue
        text = decode(line.data)
        segments, style = ansi.parse(text, style)
        out.append(
            ViewLine(
                number=line.number,
                offset=line.offset,
                length=line.length,
                segments=highlight.split_segments(segments, terms),
                partial=not line.complete,
                truncated=line.truncated,
                content_length=line.content_length,
                level=level_of(ansi.strip(text)),
            )
        )
    return out


def _index_point(cursor: LogIndexCursor | None) -> tuple[int, int]:
    """(next line number, byte offset) where the index stopped."""
    if cursor is None or cursor.purged_at is not None:
        return 1, 0
    return cursor.next_line, cursor.indexed_upto


def _line_start(*, attempt_id: int, line_no: int, cursor: LogIndexCursor | None) -> tuple[int, int]:
    """The closest known (line number, offset) at or before `line_no`."""
    best = (1, 0)
    mark = (
        LogLineMark.objects.filter(attempt_id=attempt_id, line_no__lte=line_no)
        .order_by("-line_no")
        .values_list("line_no", "offset")
        .first()
    )
    if mark is not None:
        best = mark
    point = _index_point(cursor)
    if best[0] < point[0] <= line_no:
        best = point
    return best


def log_page(
    *,
    attempt: Attempt,
    from_line: int | None = None,
    page_lines: int = PAGE_LINES,
    cap: int = DISPLAY_CAP,
    search: str = "",
) -> LogPage:
    """A window of numbered lines: from `from_line`, or the last page when None."""
    cursor = LogIndexCursor.objects.filter(attempt=attempt).first()
    end = log_end(attempt=attempt)
    if cursor is not None and cursor.purged_at is not None:
        # Retention removed the tail: nothing to show but that fact.
        return LogPage(
            lines=[],
            first=0,
            last=0,
            known_lines=0,
            log_bytes=end,
            at_end=True,
            next_offset=end,
            next_line=1,
            purged=True,
        )
    point_line, point_offset = _index_point(cursor)
    terms = ParsedQuery.parse(search).terms if search else ()

    # Count the lines past the index (normally a few seconds' worth), keeping
    # the last page of them in case the tail is what was asked for.
    tail: deque[Line] = deque(maxlen=page_lines)
    for line in split_lines(
        log_pieces(attempt_id=attempt.pk, start=point_offset, end=end),
        first_number=point_line,
        cap=cap if from_line is None else 0,
    ):
        tail.append(line)
    known = tail[-1].number if tail else point_line - 1

    if from_line is None and (len(tail) == page_lines or point_line == 1):
        lines = list(tail)
        at_end = True
    else:
        if from_line is None or from_line > known:
            from_line = max(1, known - page_lines + 1)
        from_line = max(1, from_line)
        start_line, start_offset = _line_start(
            attempt_id=attempt.pk, line_no=from_line, cursor=cursor
        )
        lines = []
        at_end = True
        for line in split_lines(
            log_pieces(attempt_id=attempt.pk, start=start_offset, end=end),
            first_number=start_line,
            cap=cap,
        ):
            if line.number < from_line:
                continue
            if len(lines) == page_lines:
                at_end = False
                break
            lines.append(line)

    if lines and at_end:
        last = lines[-1]
        nxt = (last.number, last.offset) if not last.complete else (last.number + 1, last.end)
    elif lines:
        nxt = (lines[-1].number + 1, lines[-1].end)
    else:
        nxt = (point_line, point_offset)
    first_error = cursor.first_error_line if cursor is not None else None
    view = _view_lines(lines, terms)
    if first_error is None:
        first_error = next((v.number for v in view if v.level == LogLevel.ERROR), None)
    return LogPage(
        lines=view,
        first=lines[0].number if lines else 0,
        last=lines[-1].number if lines else 0,
        known_lines=known,
        log_bytes=end,
        at_end=at_end,
        next_line=nxt[0],
        next_offset=nxt[1],
        first_error_line=first_error,
    )


@dataclass
class LogLinesAfter:
    lines: list[ViewLine]
    next_offset: int
    next_line: int
    log_bytes: int
    more: bool


def log_lines_after(
    *, attempt: Attempt, offset: int, line: int, limit: int = PAGE_LINES, cap: int = DISPLAY_CAP
) -> LogLinesAfter:
    """Lines from byte `offset` (the start of line number `line`) onwards:
    what the viewer's live refresh appends, and "show full line"."""
    end = log_end(attempt=attempt)
    offset = max(0, min(offset, end))
    lines: list[Line] = []
    more = False
    for item in split_lines(
        log_pieces(attempt_id=attempt.pk, start=offset, end=end), first_number=line, cap=cap
    ):
        if len(lines) == limit:
            more = True
            break
        lines.append(item)
    complete = [x for x in lines if x.complete]
    if complete:
        nxt_line, nxt_offset = complete[-1].number + 1, complete[-1].end
    else:
        nxt_line, nxt_offset = line, offset
    return LogLinesAfter(
        lines=_view_lines(lines, ()),
        next_offset=nxt_offset,
        next_line=nxt_line,
        log_bytes=end,
        more=more,
    )


# --- search -------------------------------------------------------------------


@dataclass
class LogSearchHit:
    attempt: Attempt
    line_no: int
    offset: int
    text: str
    timestamp: dt.datetime
    level: int
    snippet: list[tuple[str, bool]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return log_line_url(attempt=self.attempt, line_no=self.line_no)


@dataclass
class LogSearchResult:
    hits: list[LogSearchHit]
    has_more: bool
    query: ParsedQuery
    offset: int = 0
    limit: int = 50


def log_line_url(*, attempt: Attempt, line_no: int) -> str:
    return f"{reverse('log-viewer', args=[attempt.uid])}?line={line_no}#L{line_no}"


def log_search(
    *,
    experiment_ids: Collection[int],
    text: str,
    experiment: str = "",
    campaign: str = "",
    stage: str = "",
    site: str = "",
    node: str = "",
    exit_code: int | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    attempt_ids: Collection[int] | None = None,
    error_class: str = "",
    limit: int = 50,
    offset: int = 0,
) -> LogSearchResult:
    """Search the log index within the caller's experiments, newest first.

    `attempt_ids` restricts the search further (the lead wires triage's
    error-class filter through it)."""
    scope = set(experiment_ids)
    if experiment:
        scope &= set(
            production.experiment_list_by_ids(experiment_ids=scope)
            .filter(name=experiment)
            .values_list("pk", flat=True)
        )
    if error_class:
        # The triage app knows which attempts are in a class.
        from triage.selectors import error_class_attempt_ids

        in_class = error_class_attempt_ids(error_class, scope)
        attempt_ids = in_class if attempt_ids is None else in_class & set(attempt_ids)
    parsed = ParsedQuery.parse(text)
    if not scope or parsed.is_empty or (attempt_ids is not None and not attempt_ids):
        return LogSearchResult(hits=[], has_more=False, query=parsed, offset=offset, limit=limit)
    page = get_log_index().search(
        SearchQuery(
            text=text,
            experiment_ids=frozenset(scope),
            campaign=campaign,
            stage=stage,
            site=site,
            node=node,
            exit_code=exit_code,
            since=since,
            until=until,
            attempt_ids=attempt_ids,
            limit=limit,
            offset=offset,
        )
    )
    # The index already scoped the hits; loading attempts through the scoped
    # selector makes sure a stale index entry can never show another experiment.
    attempts = {
        str(a.uid): a
        for a in production.attempt_list(experiment_ids=scope).filter(
            uid__in={h.attempt_uid for h in page.hits}
        )
    }
    hits = [
        LogSearchHit(
            attempt=attempts[h.attempt_uid],
            line_no=h.line_no,
            offset=h.offset,
            text=h.text,
            timestamp=h.timestamp,
            level=h.level,
            snippet=highlight.snippet(h.text, parsed.terms),
        )
        for h in page.hits
        if h.attempt_uid in attempts
    ]
    return LogSearchResult(
        hits=hits, has_more=page.has_more, query=parsed, offset=offset, limit=limit
    )


# --- index health -------------------------------------------------------------


def index_lag_bytes() -> int:
    """Log bytes stored but not yet indexed, over all attempts (a metric).
    A running job's last line without a newline counts until it gets one."""
    behind = LogIndexCursor.objects.filter(
        purged_at__isnull=True, attempt__log_bytes__gt=F("indexed_upto")
    ).aggregate(lag=Sum(F("attempt__log_bytes") - F("indexed_upto")))["lag"]
    never = Attempt.objects.filter(log_bytes__gt=0, log_index_cursor__isnull=True).aggregate(
        lag=Sum("log_bytes")
    )["lag"]
    return (behind or 0) + (never or 0)


# --- full logs ----------------------------------------------------------------


def full_log_get(*, attempt: Attempt) -> FullLog | None:
    return FullLog.objects.filter(attempt=attempt).first()
