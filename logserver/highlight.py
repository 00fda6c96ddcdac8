"""Where search terms occur in a line, for highlighting. Pure: the template
escapes each piece and wraps the matched ones in <mark>, so markup in a log
line can never become markup on the page."""

import re
from collections.abc import Sequence

SNIPPET_CHARS = 300


def match_ranges(text: str, terms: Sequence[str]) -> list[tuple[int, int]]:
    """Merged, sorted [start, end) ranges of case-insensitive term matches."""
    ranges = []
    for term in terms:
        if not term:
            continue
        ranges += [(m.start(), m.end()) for m in re.finditer(re.escape(term), text, re.IGNORECASE)]
    ranges.sort()
    merged: list[tuple[int, int]] = []
    for start, end in ranges:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def split_matches(text: str, terms: Sequence[str]) -> list[tuple[str, bool]]:
    """The text as (piece, is_match) pairs, in order."""
    out: list[tuple[str, bool]] = []
    pos = 0
    for start, end in match_ranges(text, terms):
        if start > pos:
            out.append((text[pos:start], False))
        out.append((text[start:end], True))
        pos = end
    if pos < len(text) or not out:
        out.append((text[pos:], False))
    return out


def snippet(text: str, terms: Sequence[str], width: int = SNIPPET_CHARS) -> list[tuple[str, bool]]:
    """At most `width` characters around the first match, with … where cut."""
    if len(text) <= width:
        return split_matches(text, terms)
    ranges = match_ranges(text, terms)
    first = ranges[0][0] if ranges else 0
    start = max(0, min(first - width // 4, len(text) - width))
    piece = text[start : start + width]
    out = split_matches(piece, terms)
    if start > 0:
        out.insert(0, ("…", False))
    if start + width < len(text):
        out.append(("…", False))
    return out


def split_segments(
    segments: Sequence[tuple[str, str]], terms: Sequence[str]
) -> list[tuple[str, str, bool]]:
    """ANSI-styled (text, css) segments further split by term matches:
    (text, css, is_match). Matches are found on the whole line, so a term
    that crosses a colour change is still found."""
    if not terms:
        return [(text, css, False) for text, css in segments]
    full = "".join(text for text, _ in segments)
    ranges = match_ranges(full, terms)
    if not ranges:
        return [(text, css, False) for text, css in segments]
    out: list[tuple[str, str, bool]] = []
    pos = 0
    for text, css in segments:
        seg_start, seg_end = pos, pos + len(text)
        cut = seg_start
        for start, end in ranges:
            if end <= cut or start >= seg_end:
                continue
            if start > cut:
                out.append((full[cut:start], css, False))
            hit_end = min(end, seg_end)
            out.append((full[max(start, cut) : hit_end], css, True))
            cut = hit_end
        if cut < seg_end:
            out.append((full[cut:seg_end], css, False))
        pos = seg_end
    return out
