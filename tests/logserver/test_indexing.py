"""Indexing: lines cut from stored chunks, at-least-once, never duplicated."""

import datetime as dt

import pytest
from django.test import Client
from django.utils import timezone

from logserver import indexing, services
from logserver.index import SearchQuery, get_log_index
from logserver.models import LogIndexCursor, LogLine, LogLineMark
from prodmon.models import Attempt
from tests.logserver.conftest import ingest_log

pytestmark = pytest.mark.django_db


def _lines(attempt) -> list[tuple[int, str]]:
    return list(
        LogLine.objects.filter(attempt=attempt).order_by("line_no").values_list("line_no", "text")
    )


def _store(attempt, offset: int, data: bytes) -> None:
    services.log_chunk_store(attempt=attempt, offset=offset, data=data)
    end = offset + len(data)
    if end > attempt.log_bytes:
        Attempt.objects.filter(pk=attempt.pk).update(log_bytes=end)
        attempt.log_bytes = end


def _end(attempt, exit_code=1) -> None:
    Attempt.objects.filter(pk=attempt.pk).update(
        status=Attempt.Status.FAILED, exit_code=exit_code, ended_at=timezone.now()
    )


def _search(experiment, text: str) -> list[tuple[str, int]]:
    page = get_log_index().search(SearchQuery(text=text, experiment_ids=frozenset({experiment.pk})))
    return [(h.attempt_uid, h.line_no) for h in page.hits]


def test_it_indexes_only_complete_lines_while_the_attempt_runs(make_attempt):
    attempt = make_attempt()
    _store(attempt, 0, b"one\ntwo\nthr")
    assert indexing.log_index_attempt(attempt_id=attempt.pk) == 2
    assert _lines(attempt) == [(1, "one"), (2, "two")]
    cursor = LogIndexCursor.objects.get(attempt=attempt)
    assert (cursor.indexed_upto, cursor.next_line, cursor.finished) == (8, 3, False)


def test_it_stops_at_a_gap_while_the_attempt_runs(make_attempt):
    attempt = make_attempt()
    _store(attempt, 0, b"one\n")
    _store(attempt, 10, b"after the gap\n")
    indexing.log_index_attempt(attempt_id=attempt.pk)
    assert _lines(attempt) == [(1, "one")]


def test_it_indexes_the_rest_at_the_end_counting_each_gap_as_one_line(make_attempt):
    attempt = make_attempt()
    _store(attempt, 0, b"one\ntw")
    _store(attempt, 10, b"after the gap\nlast without newline")
    indexing.log_index_attempt(attempt_id=attempt.pk)
    _end(attempt)
    indexing.log_index_attempt(attempt_id=attempt.pk)
    # line 2 "tw" is cut by the gap (line 3, not stored as text).
    assert _lines(attempt) == [
        (1, "one"),
        (2, "tw"),
        (4, "after the gap"),
        (5, "last without newline"),
    ]
    cursor = LogIndexCursor.objects.get(attempt=attempt)
    assert cursor.finished
    assert [p[3] for p in cursor.rewind_points] == ["gap", "partial"]


def test_it_reindexes_from_a_gap_that_is_filled_after_the_end(make_attempt):
    attempt = make_attempt()
    _store(attempt, 0, b"one\n")
    _store(attempt, 8, b"three\n")
    _end(attempt)
    indexing.log_index_attempt(attempt_id=attempt.pk)
    assert _lines(attempt) == [(1, "one"), (3, "three")]
    _store(attempt, 4, b"two\n")
    indexing.log_index_attempt(attempt_id=attempt.pk)
    assert _lines(attempt) == [(1, "one"), (2, "two"), (3, "three")]
    assert LogIndexCursor.objects.get(attempt=attempt).rewind_points == []


def test_it_reindexes_a_last_line_that_grew_after_the_end(make_attempt):
    attempt = make_attempt()
    _store(attempt, 0, b"one\npart")
    _end(attempt)
    indexing.log_index_attempt(attempt_id=attempt.pk)
    _store(attempt, 8, b"ial\nmore\n")
    indexing.log_index_attempt(attempt_id=attempt.pk)
    assert _lines(attempt) == [(1, "one"), (2, "partial"), (3, "more")]


def test_indexing_the_same_range_twice_never_duplicates_a_line(make_attempt, experiment):
    attempt = make_attempt()
    _store(attempt, 0, b"alpha\nbeta\n")
    indexing.log_index_attempt(attempt_id=attempt.pk)
    # As if the cursor update had been lost after the lines were written.
    LogIndexCursor.objects.filter(attempt=attempt).update(indexed_upto=0, next_line=1)
    indexing.log_index_attempt(attempt_id=attempt.pk)
    assert _lines(attempt) == [(1, "alpha"), (2, "beta")]
    assert _search(experiment, "beta") == [(str(attempt.uid), 2)]


def test_it_finds_lines_again_after_a_crash_between_the_store_and_the_index(
    stage, experiment, ingest_token, settings, django_capture_on_commit_callbacks
):
    """The chunk is committed but its index task never runs (indexing from the
    ingest path switched off stands in for a crash or a lost broker message)."""
    settings.PRODMON_LOG_INDEX_ON_INGEST = False
    api = Client(HTTP_AUTHORIZATION=f"Bearer {ingest_token[1]}")
    body = {
        "event_id": "crash-test-0001",
        "campaign": "mc",
        "stage": "gen",
        "job": "in.root",
        "attempt": "6f9619ff-8b86-d011-b42d-00c04fc964ff",
        "host": "wn01",
    }
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post("/api/v1/ingest/start/", body, content_type="application/json").status_code
        beat = dict(
            body,
            event_id="crash-test-0002",
            log={"offset": 0, "data": "Begin processing\nFatal Root Error: TFile\n"},
        )
        del beat["host"]
        r = api.post("/api/v1/ingest/heartbeat/", beat, content_type="application/json")
        assert r.status_code == 201
    assert _search(experiment, "TFile") == []
    assert indexing.log_index_stale_attempt_ids() == [Attempt.objects.get().pk]

    report = indexing.log_index_reconcile()
    assert (report.attempts, report.lines, report.failed) == (1, 2, 0)
    uid = body["attempt"]
    assert _search(experiment, "TFile") == [(uid, 2)]

    assert indexing.log_index_stale_attempt_ids() == []
    indexing.log_index_reconcile()
    assert LogLine.objects.count() == 2


def test_the_reconciler_finishes_an_attempt_whose_end_was_never_indexed(make_attempt):
    attempt = make_attempt()
    _store(attempt, 0, b"one\nno newline at the end")
    indexing.log_index_attempt(attempt_id=attempt.pk)
    _end(attempt)
    assert indexing.log_index_stale_attempt_ids() == [attempt.pk]
    indexing.log_index_reconcile()
    assert _lines(attempt) == [(1, "one"), (2, "no newline at the end")]
    assert indexing.log_index_stale_attempt_ids() == []


def test_the_reconciler_notices_a_gap_filled_after_the_end(make_attempt):
    attempt = make_attempt()
    _store(attempt, 0, b"a\n")
    _store(attempt, 4, b"c\n")
    _end(attempt)
    indexing.log_index_attempt(attempt_id=attempt.pk)
    assert indexing.log_index_stale_attempt_ids() == []
    LogIndexCursor.objects.filter(attempt=attempt).update(
        updated_at=timezone.now() - dt.timedelta(minutes=1)
    )
    services.log_chunk_store(attempt=attempt, offset=2, data=b"b\n")
    assert indexing.log_index_stale_attempt_ids() == [attempt.pk]
    indexing.log_index_reconcile()
    assert _lines(attempt) == [(1, "a"), (2, "b"), (3, "c")]


def test_the_ingest_path_indexes_after_commit(
    make_attempt, ingest_token, experiment, django_capture_on_commit_callbacks
):
    attempt = make_attempt()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        ingest_log(ingest_token[0], attempt, 0, b"searchable right away\n")
    assert callbacks
    assert _search(experiment, "searchable") == [(str(attempt.uid), 1)]


def test_it_enqueues_at_most_one_index_task_per_attempt_within_the_debounce(
    make_attempt, ingest_token, settings, monkeypatch, django_capture_on_commit_callbacks
):
    from django.core.cache import cache

    from logserver.tasks import log_index_attempt_task

    sent = []
    monkeypatch.setattr(
        log_index_attempt_task, "apply_async", lambda args, countdown: sent.append(args)
    )
    settings.PRODMON_LOG_INDEX_DEBOUNCE_SECONDS = 5
    attempt, other = make_attempt(), make_attempt()
    cache.delete(indexing.debounce_key(attempt.pk))
    cache.delete(indexing.debounce_key(other.pk))
    with django_capture_on_commit_callbacks(execute=True):
        for i in range(5):
            ingest_log(ingest_token[0], attempt, i * 4, b"abc\n")
        ingest_log(ingest_token[0], other, 0, b"xyz\n")
    assert sent == [(attempt.pk,), (other.pk,)]
    cache.delete(indexing.debounce_key(attempt.pk))
    cache.delete(indexing.debounce_key(other.pk))


def test_a_resent_chunk_enqueues_nothing(make_attempt, django_capture_on_commit_callbacks):
    attempt = make_attempt()
    services.log_chunk_store(attempt=attempt, offset=0, data=b"x\n")
    with django_capture_on_commit_callbacks() as callbacks:
        services.log_chunk_store(attempt=attempt, offset=0, data=b"x\n")
    assert callbacks == []


def test_it_keeps_a_mark_every_few_hundred_lines_and_the_first_error(make_attempt):
    attempt = make_attempt()
    text = "".join(f"line {i}\n" for i in range(1, 1201)).replace(
        "line 777\n", "segmentation violation here\n"
    )
    _store(attempt, 0, text.encode())
    indexing.log_index_attempt(attempt_id=attempt.pk)
    marks = list(
        LogLineMark.objects.filter(attempt=attempt).order_by("line_no").values_list("line_no")
    )
    assert [m[0] for m in marks] == [1, 501, 1001]
    offset = LogLineMark.objects.get(attempt=attempt, line_no=501).offset
    assert text.encode()[offset:].startswith(b"line 501\n")
    assert LogIndexCursor.objects.get(attempt=attempt).first_error_line == 777


def test_lines_carry_the_time_their_chunk_was_written(make_attempt):
    attempt = make_attempt()
    when = timezone.now().replace(microsecond=0) - dt.timedelta(hours=2)
    services.log_chunk_store(attempt=attempt, offset=0, data=b"early\n", logged_at=when)
    services.log_chunk_store(attempt=attempt, offset=6, data=b"later\n")
    Attempt.objects.filter(pk=attempt.pk).update(log_bytes=12)
    indexing.log_index_attempt(attempt_id=attempt.pk)
    early, later = LogLine.objects.filter(attempt=attempt).order_by("line_no")
    assert early.timestamp == when
    assert later.timestamp > when + dt.timedelta(hours=1)


def test_it_indexes_a_large_log_in_batches(make_attempt, monkeypatch):
    monkeypatch.setattr(indexing, "BATCH_LINES", 100)
    attempt = make_attempt()
    _store(attempt, 0, "".join(f"{i}\n" for i in range(1050)).encode())
    assert indexing.log_index_attempt(attempt_id=attempt.pk) == 1050
    assert LogLine.objects.filter(attempt=attempt).count() == 1050


def test_rebuild_forgets_the_index_so_the_reconciler_redoes_it(make_attempt):
    attempt = make_attempt()
    _store(attempt, 0, b"x\ny\n")
    indexing.log_index_attempt(attempt_id=attempt.pk)
    assert indexing.log_index_rebuild() == 1
    assert not LogLine.objects.exists()
    assert indexing.log_index_stale_attempt_ids() == [attempt.pk]
    indexing.log_index_reconcile()
    assert _lines(attempt) == [(1, "x"), (2, "y")]


def test_the_index_lag_metric_counts_bytes_not_yet_indexed(make_attempt):
    from logserver.selectors import index_lag_bytes

    attempt = make_attempt()
    _store(attempt, 0, b"one\ntwo\nthr")
    assert index_lag_bytes() == 11
    indexing.log_index_attempt(attempt_id=attempt.pk)
    assert index_lag_bytes() == 3  # "thr" waits for its newline
    _end(attempt)
    indexing.log_index_attempt(attempt_id=attempt.pk)
    assert index_lag_bytes() == 0


def test_the_reconcile_command_reports_what_it_indexed(make_attempt):
    import io

    from django.core.management import call_command

    attempt = make_attempt()
    _store(attempt, 0, b"x\ny\n")
    out = io.StringIO()
    call_command("logindex_reconcile", "--until-done", stdout=out)
    assert "indexed 2 lines of 1 attempts" in out.getvalue()
    out = io.StringIO()
    call_command("logindex_reconcile", "--rebuild", stdout=out)
    assert "forgot the index of 1 attempts" in out.getvalue()
    assert _lines(attempt) == [(1, "x"), (2, "y")]
