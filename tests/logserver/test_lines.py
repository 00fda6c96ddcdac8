"""Line numbering, ANSI rendering and highlighting: pure functions."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from logserver import ansi, highlight
from logserver.lines import decode, index_text, level_of, split_lines
from logserver.models import LogLevel
from logserver.reassembly import Piece, reassemble


def _pieces(data: bytes, seed: int, keep: float = 1.0) -> list[Piece]:
    rnd = random.Random(seed)
    chunks, pos = [], 0
    while pos < len(data):
        size = rnd.randint(1, 9)
        if rnd.random() < keep:
            chunks.append((pos, data[pos : pos + size]))
        pos += size
    return reassemble(chunks, 0, len(data))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), seed=st.integers(0, 2**32), cap=st.integers(0, 50))
def test_lines_tile_the_log_and_keep_a_capped_prefix(data, seed, cap):
    lines = list(split_lines(_pieces(data, seed), cap=cap))
    assert [x.number for x in lines] == list(range(1, len(lines) + 1))
    assert b"".join(data[x.offset : x.end] for x in lines) == data
    for line in lines:
        content = data[line.offset : line.offset + line.content_length]
        assert b"\n" not in content
        assert line.data == content[:cap]
        assert line.complete == (data[line.end - 1 : line.end] == b"\n") or line is lines[-1]
    assert len(lines) == data.count(b"\n") + (0 if not data or data.endswith(b"\n") else 1)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), seed=st.integers(0, 2**32))
def test_each_gap_is_one_pseudo_line_and_ends_the_line_it_cuts(data, seed):
    pieces = _pieces(data, seed, keep=0.6)
    lines = list(split_lines(pieces, cap=1000))
    gaps = [p for p in pieces if p.is_gap]
    assert [(x.offset, x.length) for x in lines if x.is_gap] == [(g.offset, g.length) for g in gaps]
    assert sum(x.length for x in lines) == len(data)
    # Windows of any size give the same lines as one pass.
    windowed = []
    for i in range(0, len(data), 7):
        stored = [(p.offset, p.data) for p in pieces if not p.is_gap]
        windowed += reassemble(stored, i, min(i + 7, len(data)))
    assert list(split_lines(windowed, cap=1000)) == lines


def test_a_line_cut_by_a_gap_is_complete_and_the_text_after_starts_a_new_line():
    pieces = [Piece(0, 3, b"abc"), Piece(3, 5, None), Piece(8, 4, b"def\n")]
    lines = list(split_lines(pieces, cap=100))
    assert [(x.number, x.data, x.is_gap) for x in lines] == [
        (1, b"abc", False),
        (2, b"", True),
        (3, b"def", False),
    ]


def test_the_last_line_without_a_newline_is_partial():
    lines = list(split_lines([Piece(0, 9, b"one\ntwo..")], first_number=41, cap=100))
    assert [(x.number, x.complete) for x in lines] == [(41, True), (42, False)]


def test_index_text_drops_escapes_and_nuls_and_decodes_with_replacement():
    raw = b"\x1b[1;31mERROR\x1b[0m bad \xff byte\x00 here\r"
    assert index_text(raw) == "ERROR bad \ufffd byte here"
    assert decode(b"crlf\r") == "crlf"


def test_levels_come_from_the_words_of_the_line():
    assert level_of("%MSG-s ArtException: PostEndJob") == LogLevel.ERROR
    assert level_of("Fatal Root Error: @SUB=TFile::TFile") == LogLevel.ERROR
    assert level_of("Warning in <TClass::Init>: no dictionary") == LogLevel.WARNING
    assert level_of("Begin processing the 1st record") == LogLevel.INFO
    assert level_of("0 errors, all fine") == LogLevel.INFO


def test_sgr_colours_become_classes_and_other_escapes_vanish():
    text = "\x1b[31mred\x1b[0m plain \x1b[1;92mbold green\x1b[39m bold\x1b]0;title\x07\x1b[2K end"
    segments, style = ansi.parse(text)
    assert segments == [
        ("red", "a-fg1"),
        (" plain ", ""),
        ("bold green", "a-fg10 a-b"),
        (" bold end", "a-b"),
    ]
    assert style == ansi.Style(bold=True)
    assert ansi.strip(text) == "red plain bold green bold end"


def test_sgr_state_carries_over_to_the_next_line():
    _, style = ansi.parse("\x1b[33myellow starts")
    segments, _ = ansi.parse("and goes on\x1b[0m", style)
    assert segments == [("and goes on", "a-fg3")]


def test_extended_colours_map_the_first_sixteen_and_drop_the_rest():
    assert ansi.parse("\x1b[38;5;9mx")[0] == [("x", "a-fg9")]
    assert ansi.parse("\x1b[38;2;10;20;30;4mx")[0] == [("x", "a-u")]
    assert ansi.parse("\x1b[48;5;200mx")[0] == [("x", "")]


def test_control_characters_are_made_visible():
    assert ansi.parse("a\x00b\x08c\td")[0] == [("a\u2400b\u2408c\td", "")]


@given(st.text(max_size=80))
def test_class_names_never_come_from_the_text(text):
    for _, css in ansi.parse(text)[0]:
        assert all(c.isalnum() or c in " -" for c in css)


def test_matches_are_found_across_colour_changes():
    segments = [("Fatal ", "a-fg1"), ("Root", ""), (" Error", "a-b")]
    assert highlight.split_segments(segments, ["al root e"]) == [
        ("Fat", "a-fg1", False),
        ("al ", "a-fg1", True),
        ("Root", "", True),
        (" E", "a-b", True),
        ("rror", "a-b", False),
    ]


def test_a_snippet_is_cut_around_the_first_match():
    text = "x" * 1000 + " needle " + "y" * 1000
    parts = highlight.snippet(text, ["needle"], width=100)
    assert parts[0] == ("…", False)
    assert parts[-1] == ("…", False)
    assert ("needle", True) in parts
    assert sum(len(t) for t, _ in parts) == 102
