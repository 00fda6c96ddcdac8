"""The database backend's vendor parts: PostgreSQL GIN (tsvector + pg_trgm)
and SQLite FTS5 (words + trigram), beyond the shared contract."""

import pytest
from django.db import connection

from logserver import indexing, selectors, services
from logserver.index import ParsedQuery
from logserver.index.database import DatabaseLogIndex, _text_conditions
from logserver.lines import INDEX_MAX_LINE_CHARS
from logserver.models import LogLine
from prodmon.models import Attempt

pytestmark = pytest.mark.django_db


def _indexed(attempt, data: bytes) -> None:
    services.log_chunk_store(attempt=attempt, offset=0, data=data)
    Attempt.objects.filter(pk=attempt.pk).update(log_bytes=len(data))
    indexing.log_index_attempt(attempt_id=attempt.pk)


def _lines(experiment, text: str) -> list[int]:
    return [h.line_no for h in selectors.log_search(experiment_ids={experiment.pk}, text=text).hits]


def test_a_quoted_phrase_matches_inside_words_and_a_word_does_not(make_attempt, experiment):
    _indexed(make_attempt(), b"---- FileOpenError BEGIN\n/pnfs/dune/scratch/flux.root\nok\n")
    assert _lines(experiment, '"OpenErr"') == [1]
    assert _lines(experiment, "OpenErr") == []
    assert _lines(experiment, '"dune/scratch"') == [2]
    assert _lines(experiment, '"ok"') == [3]  # shorter than a trigram
    assert _lines(experiment, '"k"') == [3]


def test_like_wildcards_in_a_phrase_are_literal(make_attempt, experiment):
    _indexed(make_attempt(), b"100% done\n100 percent\nunder_score\nunderXscore\n")
    assert _lines(experiment, '"100%"') == [1]
    assert _lines(experiment, '"under_score"') == [3]


def test_fts_syntax_in_a_query_is_just_text(make_attempt, experiment):
    _indexed(make_attempt(), b'say "hi" NEAR the OR gate AND (x*)\n')
    assert _lines(experiment, "OR AND NEAR") == [1]
    assert _lines(experiment, "x*") == [1]
    assert _lines(experiment, '"(x*)"') == [1]


def test_nuls_and_very_long_lines_are_indexed_safely(make_attempt, experiment):
    long_line = b"start " + b"y" * 20_000 + b" tail-word\n"
    _indexed(make_attempt(), b"nul\x00inside here\n" + long_line)
    first, second = LogLine.objects.order_by("line_no")
    assert first.text == "nulinside here"
    assert len(second.text) == INDEX_MAX_LINE_CHARS
    assert _lines(experiment, "start") == [2]
    assert _lines(experiment, "tail-word") == []  # past the indexed prefix


def test_deleted_and_rewritten_lines_leave_the_full_text_index(make_attempt, experiment):
    attempt = make_attempt()
    _indexed(attempt, b"original words\n")
    index = DatabaseLogIndex()
    labels = indexing.attempt_labels(attempt)
    LogLine.objects.filter(attempt=attempt).update(text="replacement words")
    assert _lines(experiment, "original") == []
    assert _lines(experiment, "replacement") == [1]
    index.delete_lines_from(labels, 1)
    assert _lines(experiment, "words") == []


def test_postgres_conditions_match_the_gin_indexes(make_attempt, require_postgres):
    """The SQL the search writes must be the indexed expressions, or PostgreSQL
    would scan every line: with sequential scans off, the plan names each index."""
    _indexed(make_attempt(), b"Fatal Root Error\n")
    plans = []
    for text in ("fatal root", '"Root Err"'):
        qs = LogLine.objects.all()
        for cond in _text_conditions(ParsedQuery.parse(text)):
            qs = qs.filter(cond)
        assert qs.exists()
        sql, params = qs.values("id").query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("EXPLAIN " + sql, params)
            plans.append("\n".join(row[0] for row in cursor.fetchall()))
    assert "logline_text_tsv" in plans[0]
    assert "logline_text_trgm" in plans[1]


# --- PostgreSQL: the two query plans give the same pages -------------------------


def _dated_lines(make_attempt, n: int, every: int = 4) -> None:
    """n lines in 3 attempts, timestamps interleaved, so newest-first order
    crosses attempts; one line in `every` is a TFile error."""
    import datetime as dt

    base = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
    for a in range(3):
        attempt = make_attempt()
        data = "".join(
            f"event {i} {'Fatal TFile::Open' if i % every == 0 else 'processing record'}\n"
            for i in range(a, n, 3)
        ).encode()
        _indexed(attempt, data)
        for row in LogLine.objects.filter(attempt=attempt):
            LogLine.objects.filter(pk=row.pk).update(
                timestamp=base + dt.timedelta(seconds=int(row.text.split()[1]))
            )


@pytest.mark.parametrize("text", ["tfile", '"TFile::Open"', "processing", '"record"'])
def test_every_plan_gives_the_same_newest_first_pages(
    make_attempt, experiment, require_postgres, monkeypatch, text
):
    """The GIN-and-sort plan, the ordered walk and the phrase probe (see
    logserver/index/database.py) are chosen by estimates; whichever is chosen,
    page after page must be the same lines in the same order."""
    from logserver.index import database

    _dated_lines(make_attempt, 120)

    def pages(limit=7):
        out, offset = [], 0
        while True:
            result = selectors.log_search(
                experiment_ids={experiment.pk}, text=text, limit=limit, offset=offset
            )
            out += [int(h.text.split()[1]) for h in result.hits]
            if not result.has_more:
                return out
            offset += limit

    expected = sorted(
        (
            int(t.split()[1])
            for t in LogLine.objects.values_list("text", flat=True)
            if text.strip('"').lower() in t.lower()
        ),
        reverse=True,
    )
    assert len(expected) >= 30
    seen = []
    # GIN path for words, probe path for phrases; then the ordered walk for both.
    for few, cost in ((10_000, 10**9), (5, 0)):
        monkeypatch.setattr(database, "FEW_MATCHES", few)
        monkeypatch.setattr(database, "SCAN_COST", cost)
        seen.append(pages())
    assert seen == [expected, expected]


def test_an_uncommon_word_takes_the_gin_path_and_a_common_one_the_ordered_walk(
    make_attempt, experiment, require_postgres
):
    from django.db import connection as conn
    from django.test.utils import CaptureQueriesContext

    _dated_lines(make_attempt, 3000, every=100)
    with conn.cursor() as cursor:
        cursor.execute("ANALYZE logserver_logline")
    with CaptureQueriesContext(conn) as rare:
        selectors.log_search(experiment_ids={experiment.pk}, text="tfile", limit=5)
    with CaptureQueriesContext(conn) as common:
        selectors.log_search(experiment_ids={experiment.pk}, text="processing", limit=5)
    final = [q["sql"] for q in rare.captured_queries if "logserver_logline" in q["sql"]][-1]
    assert "interval '0 seconds'" in final
    final = [q["sql"] for q in common.captured_queries if "logserver_logline" in q["sql"]][-1]
    assert "interval '0 seconds'" not in final
