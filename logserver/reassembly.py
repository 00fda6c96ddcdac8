"""Reassemble a log from chunks that may be re-sent, out of order, overlapping
or missing. Pure functions: no database, so they can be property-tested.

Rule for overlaps: a byte position is taken from the chunk with the lowest
offset that covers it (ties: the longest chunk). Re-sent bytes are identical
in practice; the rule only makes the answer deterministic when they are not.
"""

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Piece:
    """Bytes at `offset`, or a gap of `length` missing bytes when `data` is None."""

    offset: int
    length: int
    data: bytes | None

    @property
    def is_gap(self) -> bool:
        return self.data is None

    @property
    def end(self) -> int:
        return self.offset + self.length


def reassemble(chunks: Iterable[tuple[int, bytes]], start: int, end: int) -> list[Piece]:
    """The bytes of [start, end) as contiguous data pieces and gaps, in order."""
    ordered = sorted(
        ((off, bytes(data)) for off, data in chunks if data), key=lambda c: (c[0], -len(c[1]))
    )
    pieces: list[Piece] = []
    pos = start
    for offset, data in ordered:
        if pos >= end:
            break
        chunk_end = offset + len(data)
        if chunk_end <= pos:
            continue
        if offset > pos:
            gap_end = min(offset, end)
            pieces.append(Piece(pos, gap_end - pos, None))
            pos = gap_end
            if pos >= end:
                break
        take = data[pos - offset : min(chunk_end, end) - offset]
        if pieces and not pieces[-1].is_gap:
            last = pieces.pop()
            take = last.data + take
            pos_start = last.offset
        else:
            pos_start = pos
        pieces.append(Piece(pos_start, len(take), take))
        pos = pos_start + len(take)
    if pos < end:
        pieces.append(Piece(pos, end - pos, None))
    return pieces


def contiguous_end(chunks: Iterable[tuple[int, int]], start: int = 0) -> int:
    """How far the log is complete from `start`: the first gap's offset, given
    (offset, length) pairs."""
    pos = start
    for offset, length in sorted(chunks):
        if offset > pos:
            break
        pos = max(pos, offset + length)
    return pos
