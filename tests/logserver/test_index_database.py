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
