"""Reassembly under re-sent, out-of-order, overlapping and missing chunks."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from logserver.reassembly import Piece, contiguous_end, reassemble


def _cuts(data: bytes, rnd: random.Random, max_len: int = 17) -> list[tuple[int, bytes]]:
    chunks, pos = [], 0
    while pos < len(data):
        size = rnd.randint(1, max_len)
        chunks.append((pos, data[pos : pos + size]))
        pos += size
    return chunks


def _join(pieces: list[Piece]) -> bytes:
    assert not any(p.is_gap for p in pieces)
    return b"".join(p.data for p in pieces)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=0, max_size=400), seed=st.integers(0, 2**32))
def test_resent_shuffled_and_rechunked_chunks_give_back_the_log(data, seed):
    rnd = random.Random(seed)
    chunks = _cuts(data, rnd)
    # Re-sends, a second independent chunking (overlaps at other boundaries), shuffled.
    chunks += rnd.sample(chunks, k=len(chunks) // 2) + _cuts(data, rnd, max_len=40)
    rnd.shuffle(chunks)
    assert _join(reassemble(chunks, 0, len(data))) == data
    assert contiguous_end([(o, len(d)) for o, d in chunks]) == len(data)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=1, max_size=400), seed=st.integers(0, 2**32))
def test_missing_chunks_show_as_gaps_of_exactly_their_bytes(data, seed):
    rnd = random.Random(seed)
    chunks = _cuts(data, rnd)
    kept = [c for c in chunks if rnd.random() < 0.6]
    rnd.shuffle(kept)
    pieces = reassemble(kept, 0, len(data))
    # Pieces tile [0, len) exactly, in order.
    assert pieces[0].offset == 0
    assert pieces[-1].end == len(data)
    assert all(a.end == b.offset for a, b in zip(pieces, pieces[1:], strict=False))
    covered = set()
    for off, chunk in kept:
        covered.update(range(off, off + len(chunk)))
    for piece in pieces:
        span = set(range(piece.offset, piece.end))
        if piece.is_gap:
            assert not span & covered
        else:
            assert span <= covered
            assert piece.data == data[piece.offset : piece.end]
    # No two neighbouring pieces of the same kind: gaps and data alternate.
    assert all(a.is_gap != b.is_gap for a, b in zip(pieces, pieces[1:], strict=False))


@given(
    data=st.binary(min_size=1, max_size=200), start=st.integers(0, 250), width=st.integers(0, 250)
)
def test_a_window_is_a_slice_of_the_log(data, start, width):
    chunks = _cuts(data, random.Random(1))
    end = min(start + width, len(data))
    start = min(start, end)
    assert _join(reassemble(chunks, start, end)) == data[start:end]


def test_a_gap_before_the_first_chunk_is_reported():
    pieces = reassemble([(5, b"world")], 0, 10)
    assert pieces == [Piece(0, 5, None), Piece(5, 5, b"world")]


def test_a_trailing_gap_is_reported_up_to_the_known_length():
    assert reassemble([(0, b"ab")], 0, 6) == [Piece(0, 2, b"ab"), Piece(2, 4, None)]


def test_contiguous_end_stops_at_the_first_gap():
    assert contiguous_end([(0, 4), (4, 4), (10, 5)]) == 8
    assert contiguous_end([(2, 4)]) == 0
