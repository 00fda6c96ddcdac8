"""Cutting reassembled log bytes into numbered lines. Pure functions.

The viewer and the index both number lines with split_lines, so that a search
hit's line number is the line the viewer shows:

- a line ends at a newline, which belongs to it;
- a gap (missing bytes) is one pseudo-line of its own, and also ends the line
  it interrupts;
- the last line may lack a newline: it is `complete=False`.
"""

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from logserver import ansi
from logserver.models import LogLevel
from logserver.reassembly import Piece

# What the index keeps of one line. The viewer caps what it displays separately.
INDEX_MAX_LINE_CHARS = 4096

_ERROR = re.compile(
    r"\b(?:error|fatal|exception|traceback|segmentation (?:fault|violation)|"
    r"abort(?:ed)?|core dumped|killed)\b|%MSG-[se]\b",
    re.IGNORECASE,
)
_WARNING = re.compile(r"\bwarn(?:ing)?\b|%MSG-w\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Line:
    number: int
    offset: int
    length: int  # bytes of the log this line spans, its newline included
    data: bytes  # at most `cap` bytes of the line's content, newline excluded
    content_length: int  # all content bytes, newline excluded
    is_gap: bool = False
    complete: bool = True

    @property
    def end(self) -> int:
        return self.offset + self.length

    @property
    def truncated(self) -> bool:
        return len(self.data) < self.content_length


def split_lines(pieces: Iterable[Piece], *, first_number: int = 1, cap: int) -> Iterator[Line]:
    """Number the lines of consecutive pieces (data and gaps, in order).

    Adjacent gap pieces count as one gap. Only the first `cap` bytes of each
    line are kept, so a 100 MB line costs `cap` bytes of memory.
    """
    number = first_number
    start: int | None = None  # offset of the pending line
    buf = bytearray()
    size = 0  # content bytes of the pending line
    gap_start: int | None = None
    gap_end = 0
    for piece in pieces:
        if piece.length == 0:
            continue
        if piece.is_gap:
            if start is not None:
                yield Line(number, start, size, bytes(buf), size)
                number += 1
                start, size = None, 0
                buf.clear()
            if gap_start is None:
                gap_start = piece.offset
            gap_end = piece.end
            continue
        if gap_start is not None:
            yield Line(number, gap_start, gap_end - gap_start, b"", 0, is_gap=True)
            number += 1
            gap_start = None
        data = piece.data
        pos = 0
        base = piece.offset
        while True:
            nl = data.find(b"\n", pos)
            stop = len(data) if nl < 0 else nl
            if start is None:
                start = base + pos
            room = cap - len(buf)
            if room > 0 and stop > pos:
                buf += data[pos : min(stop, pos + room)]
            size += stop - pos
            if nl < 0:
                break
            yield Line(number, start, size + 1, bytes(buf), size)
            number += 1
            start, size = None, 0
            buf.clear()
            pos = nl + 1
            if pos >= len(data):
                break
    if start is not None:
        yield Line(number, start, size, bytes(buf), size, complete=False)
    elif gap_start is not None:
        yield Line(number, gap_start, gap_end - gap_start, b"", 0, is_gap=True)


def decode(data: bytes) -> str:
    """Bytes of one line as text: UTF-8 with replacement characters, no CR at the end."""
    text = data.decode("utf-8", "replace")
    return text[:-1] if text.endswith("\r") else text


def index_text(data: bytes) -> str:
    """What the index stores and search matches: no escapes, no NULs, capped."""
    return ansi.strip(decode(data)).replace("\x00", "")[:INDEX_MAX_LINE_CHARS]


def level_of(text: str) -> int:
    """error, warning or info, from the (escape-free) text of a line."""
    head = text[:INDEX_MAX_LINE_CHARS]
    if _ERROR.search(head):
        return LogLevel.ERROR
    if _WARNING.search(head):
        return LogLevel.WARNING
    return LogLevel.INFO
