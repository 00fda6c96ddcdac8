"""Untrusted patterns: refused when dangerous, cut off when slow."""

import re
import threading
import time

import pytest

from triage.regexguard import (
    MatchBudget,
    RegexTimeout,
    UnsafePattern,
    compile_user_pattern,
    probe_pattern,
    search_last,
)


@pytest.mark.parametrize(
    "pattern", ["(a+)+b", "(a*)*b", "(x+x+)+y", "(ab|a)*c", r"(\w)\1", "", "a\nb", "x" * 401]
)
def test_it_refuses_dangerous_or_invalid_patterns(pattern):
    with pytest.raises(UnsafePattern):
        compile_user_pattern(pattern)


@pytest.mark.parametrize(
    "pattern",
    [r"std::bad_alloc", r"cannot open file \S+\.root", r"(?:ifdh|xrdcp) .*failed", r"exit (\d+)"],
)
def test_it_accepts_ordinary_patterns(pattern):
    assert compile_user_pattern(pattern).pattern == pattern
    probe_pattern(pattern)


def test_the_probe_catches_a_slow_pattern_the_parser_lets_through():
    # Five open-ended wildcards in a row: polynomial, but far too slow per line.
    pattern = r"a.*a.*a.*a.*a.*b"
    compile_user_pattern(pattern)
    with pytest.raises(UnsafePattern, match="too slow"):
        probe_pattern(pattern)


def test_the_budget_interrupts_a_runaway_match_on_the_main_thread():
    assert threading.current_thread() is threading.main_thread()
    slow = re.compile(r"(a+)+b")  # compiled directly, as if it slipped through
    started = time.monotonic()
    with pytest.raises(RegexTimeout), MatchBudget(0.2) as budget:
        search_last(slow, ["a" * 40], budget)
    assert time.monotonic() - started < 2


def test_the_budget_is_checked_between_lines_off_the_main_thread():
    outcome = {}

    def run():
        lines = ["x" * 100] * 1_000_000
        try:
            with MatchBudget(0.05) as budget:
                search_last(re.compile(r"y"), lines, budget)
            outcome["result"] = "finished"
        except RegexTimeout:
            outcome["result"] = "timeout"

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(10)
    assert outcome["result"] == "timeout"


def test_it_cuts_lines_before_matching():
    line = "x" * 5000 + "needle"
    assert search_last(re.compile("needle"), [line]) is None
    assert search_last(re.compile("needle"), ["needle here", "nothing"])[0] == 0
