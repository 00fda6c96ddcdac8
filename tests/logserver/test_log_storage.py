"""Durable log storage: chunks upserted by offset, reassembled on read, gaps shown."""

import random
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logserver import selectors, services
from logserver.models import LogChunk
from tests.logserver.conftest import ingest_log

pytestmark = pytest.mark.django_db


def _stored(attempt) -> list[tuple[int, bytes]]:
    return [
        (c.offset, bytes(c.data))
        for c in LogChunk.objects.filter(attempt=attempt).order_by("offset")
    ]


def _tail_bytes(attempt) -> bytes:
    attempt.refresh_from_db()
    segments = selectors.log_tail(attempt=attempt, max_bytes=10**9)
    assert not any(s.is_gap for s in segments)
    return "".join(s.text for s in segments).encode()


def test_it_replaces_a_shorter_chunk_with_a_longer_one_at_the_same_offset(make_attempt):
    attempt = make_attempt()
    assert services.log_chunk_store(attempt=attempt, offset=0, data=b"abc")
    assert services.log_chunk_store(attempt=attempt, offset=0, data=b"abcdef\n")
    assert _stored(attempt) == [(0, b"abcdef\n")]
    assert LogChunk.objects.get(attempt=attempt).length == 7


def test_it_keeps_the_longer_chunk_when_a_shorter_one_arrives_later(make_attempt):
    attempt = make_attempt()
    services.log_chunk_store(attempt=attempt, offset=0, data=b"abcdef\n")
    assert not services.log_chunk_store(attempt=attempt, offset=0, data=b"abc")
    assert not services.log_chunk_store(attempt=attempt, offset=0, data=b"abcdef\n")
    assert _stored(attempt) == [(0, b"abcdef\n")]


def test_it_shows_a_gap_as_a_gap(make_attempt, ingest_token, stage):
    attempt = make_attempt()
    ingest_log(ingest_token[0], attempt, 0, b"first\n")
    ingest_log(ingest_token[0], attempt, 10, b"third\n")
    attempt.refresh_from_db()
    segments = selectors.log_tail(attempt=attempt)
    assert [(s.offset, s.length, s.is_gap) for s in segments] == [
        (0, 6, False),
        (6, 4, True),
        (10, 6, False),
    ]


def test_it_reads_a_window_that_starts_inside_a_chunk(make_attempt):
    attempt = make_attempt(log_bytes=20)
    services.log_chunk_store(attempt=attempt, offset=0, data=b"0123456789")
    services.log_chunk_store(attempt=attempt, offset=10, data=b"abcdefghij")
    segments = selectors.log_tail(attempt=attempt, max_bytes=15)
    assert "".join(s.text for s in segments) == "56789abcdefghij"


def _cuts(data: bytes, rnd: random.Random, max_len: int) -> list[tuple[int, bytes]]:
    chunks, pos = [], 0
    while pos < len(data):
        size = rnd.randint(1, max_len)
        chunks.append((pos, data[pos : pos + size]))
        pos += size
    return chunks


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    data=st.binary(min_size=1, max_size=300),
    seed=st.integers(0, 2**32),
)
def test_it_gives_back_the_exact_bytes_after_resends_and_reordering(
    make_attempt, ingest_token, data, seed
):
    """Through the real ingest service: chunks re-sent, re-cut at other
    boundaries (a reporter re-reading a growing file) and shuffled."""
    rnd = random.Random(seed)
    attempt = make_attempt(uid=uuid.uuid4())
    chunks = _cuts(data, rnd, 17)
    chunks += rnd.sample(chunks, k=len(chunks) // 2) + _cuts(data, rnd, 40)
    # Prefixes of chunks sent first, the full chunk later (the upsert case).
    chunks += [(off, piece[: max(1, len(piece) // 2)]) for off, piece in chunks[:3]]
    rnd.shuffle(chunks)
    for offset, piece in chunks:
        ingest_log(ingest_token[0], attempt, offset, piece)
    assert _stored_equals(attempt, data)


def _stored_equals(attempt, data: bytes) -> bool:
    attempt.refresh_from_db()
    assert attempt.log_bytes == len(data)
    pieces = list(selectors.log_pieces(attempt_id=attempt.pk, start=0, end=len(data)))
    assert not any(p.is_gap for p in pieces)
    return b"".join(p.data for p in pieces) == data


def test_it_reads_big_logs_window_by_window(make_attempt):
    attempt = make_attempt()
    data = bytes(random.Random(3).randrange(256) for _ in range(300_000))
    for offset in range(0, len(data), 65_536):
        services.log_chunk_store(
            attempt=attempt, offset=offset, data=data[offset : offset + 65_536]
        )
    pieces = list(
        selectors.log_pieces(attempt_id=attempt.pk, start=0, end=len(data) + 5, window=50_000)
    )
    assert b"".join(p.data for p in pieces if not p.is_gap) == data
    assert pieces[-1].is_gap
    assert pieces[-1].length == 5


def test_it_skips_a_long_gap_in_one_step(make_attempt, django_assert_max_num_queries):
    attempt = make_attempt()
    services.log_chunk_store(attempt=attempt, offset=0, data=b"a\n")
    services.log_chunk_store(attempt=attempt, offset=500_000_000, data=b"z\n")
    with django_assert_max_num_queries(6):
        pieces = list(selectors.log_pieces(attempt_id=attempt.pk, start=0, end=500_000_002))
    assert [p.is_gap for p in pieces] == [False, True, False]
