"""Untrusted regular expressions: compile them carefully, run them on a budget.

Shifters write signature rules, and log text comes from anywhere, so neither
side is trusted. Python's `re` backtracks, and a pattern such as ``(a+)+b``
takes exponential time on a line of a's. The defences, in layers:

1. A pattern is at most `MAX_PATTERN_CHARS` long, must compile, and may not
   use backreferences or a repeated group that itself repeats or branches
   (the shapes behind catastrophic backtracking) - `compile_user_pattern`.
2. Before a rule is saved, it runs on adversarial lines in a separate process
   that is killed after `PROBE_SECONDS` - `probe_pattern`.
3. At match time every line is cut to `MAX_LINE_CHARS`, and all rules of one
   attempt share a time budget. On the main thread (Celery's prefork
   workers, gunicorn's sync workers) a SIGALRM interrupts even a single slow
   match; elsewhere the budget is checked between lines - `MatchBudget`.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time

try:  # Python 3.11+
    from re import _parser as sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    import sre_parse  # type: ignore[no-redef]

MAX_PATTERN_CHARS = 400
MAX_LINE_CHARS = 2000
MAX_UNBOUNDED_REPEATS = 6
PROBE_SECONDS = 2.0


class UnsafePattern(ValueError):
    """A pattern we refuse to run; the message is meant for the form."""


class RegexTimeout(Exception):
    """The time budget ran out while matching."""


def compile_user_pattern(pattern: str, *, ignore_case: bool = False) -> re.Pattern:
    if not pattern:
        raise UnsafePattern("Enter a pattern.")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise UnsafePattern(f"Keep the pattern under {MAX_PATTERN_CHARS} characters.")
    if "\n" in pattern or "\r" in pattern:
        raise UnsafePattern("A pattern matches one line; it may not contain line breaks.")
    flags = re.IGNORECASE if ignore_case else 0
    try:
        parsed = sre_parse.parse(pattern, flags)
        compiled = re.compile(pattern, flags)
    except (re.error, OverflowError, RecursionError) as exc:
        raise UnsafePattern(f"Not a valid regular expression: {exc}") from exc
    _check_tree(parsed, inside_repeat=False, counter=[0])
    return compiled


def _is_unbounded(max_count: int) -> bool:
    return max_count == sre_parse.MAXREPEAT or max_count > 1


def _check_tree(items, *, inside_repeat: bool, counter: list[int]) -> None:
    for op, arg in items:
        name = str(op)
        if name in ("GROUPREF", "GROUPREF_EXISTS", "GROUPREF_IGNORE"):
            raise UnsafePattern("Backreferences (\\1, (?P=name)) are not allowed.")
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, sub = arg
            if _is_unbounded(high):
                if inside_repeat:
                    raise UnsafePattern(
                        "A repeated group may not contain another repetition, as in (a+)+: "
                        "that can take forever on some lines."
                    )
                if high == sre_parse.MAXREPEAT or high > 1000:
                    counter[0] += 1
                    if counter[0] > MAX_UNBOUNDED_REPEATS:
                        raise UnsafePattern(
                            f"Use at most {MAX_UNBOUNDED_REPEATS} open-ended repetitions "
                            "(*, +, {n,})."
                        )
                if _contains_branch(sub) and _is_group_like(sub):
                    raise UnsafePattern(
                        "A repeated group may not contain alternatives, as in (a|ab)+: "
                        "that can take forever on some lines."
                    )
                _check_tree(sub, inside_repeat=True, counter=counter)
            else:
                _check_tree(sub, inside_repeat=inside_repeat, counter=counter)
        elif name == "SUBPATTERN":
            _check_tree(arg[-1], inside_repeat=inside_repeat, counter=counter)
        elif name in ("ASSERT", "ASSERT_NOT"):
            _check_tree(arg[1], inside_repeat=inside_repeat, counter=counter)
        elif name == "BRANCH":
            for alternative in arg[1]:
                _check_tree(alternative, inside_repeat=inside_repeat, counter=counter)
        elif name == "ATOMIC_GROUP":
            _check_tree(arg, inside_repeat=inside_repeat, counter=counter)


def _contains_branch(items) -> bool:
    for op, arg in items:
        name = str(op)
        if name == "BRANCH":
            return True
        if name == "SUBPATTERN" and _contains_branch(arg[-1]):
            return True
    return False


def _is_group_like(items) -> bool:
    return any(str(op) in ("SUBPATTERN", "BRANCH") for op, _ in items)


_PROBE_CODE = r"""
import json, re, sys
spec = json.load(sys.stdin)
rx = re.compile(spec["pattern"], spec["flags"])
for line in spec["lines"]:
    rx.search(line)
print("ok")
"""


def _probe_lines(pattern: str) -> list[str]:
    literals = set(re.findall(r"[A-Za-z0-9_./:=\- ]{1,12}", pattern))
    chars = set(" aA0/._-:=x\t") | {c for c in pattern if c.isprintable()}
    lines = [c * MAX_LINE_CHARS for c in sorted(chars)]
    for lit in sorted(literals):
        if lit.strip():
            lines.append((lit * (MAX_LINE_CHARS // len(lit) + 1))[:MAX_LINE_CHARS] + "!")
    return lines[:300]


def probe_pattern(pattern: str, *, ignore_case: bool = False) -> None:
    """Run the pattern on adversarial lines in a child process with a deadline."""
    spec = {
        "pattern": pattern,
        "flags": re.IGNORECASE if ignore_case else 0,
        "lines": _probe_lines(pattern),
    }
    try:
        result = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [sys.executable, "-I", "-c", _PROBE_CODE],
            input=json.dumps(spec),
            capture_output=True,
            text=True,
            timeout=PROBE_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise UnsafePattern(
            "This pattern is too slow on some lines (catastrophic backtracking). "
            "Make it more specific, e.g. replace .* with [^ ]* or a literal."
        ) from exc
    if result.returncode != 0 or "ok" not in result.stdout:
        raise UnsafePattern("This pattern could not be tested safely.")


class MatchBudget:
    """A time budget shared by several searches.

    Use as a context manager around all matching of one attempt. On the main
    thread, with no other interval timer running, a SIGALRM interrupts a
    match that overruns; otherwise the budget is checked between lines.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline = 0.0
        self.exhausted = False
        self._armed = False
        self._previous = None

    def __enter__(self) -> MatchBudget:
        self.deadline = time.monotonic() + self.seconds
        if (
            self.seconds > 0
            and hasattr(signal, "setitimer")
            and threading.current_thread() is threading.main_thread()
            and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        ):
            self._previous = signal.signal(signal.SIGALRM, self._on_alarm)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
            self._armed = True
        return self

    def __exit__(self, *exc) -> None:
        if self._armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous or signal.SIG_DFL)
            self._armed = False

    def _on_alarm(self, signum, frame):
        raise RegexTimeout

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise RegexTimeout


def search_last(
    regex: re.Pattern, lines: list[str], budget: MatchBudget | None = None
) -> tuple[int, re.Match] | None:
    """The last line that matches, as (index, match); lines are cut to MAX_LINE_CHARS.

    Raises RegexTimeout when the budget runs out.
    """
    search = regex.search
    for i in range(len(lines) - 1, -1, -1):
        if budget is not None and i % 64 == 0:
            budget.check()
        line = lines[i]
        match = search(line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS])
        if match is not None:
            return i, match
    return None


def required_literal(pattern: str, flags: int = 0) -> str:
    """The longest literal every match must contain (lower-cased under IGNORECASE), or "".

    Only the top level of the pattern is considered, so the answer is safe:
    a line without this text cannot match. Used to skip whole tails cheaply.
    """
    try:
        parsed = sre_parse.parse(pattern, flags)
    except (re.error, OverflowError, RecursionError):
        return ""
    best, run = "", []
    for op, arg in list(parsed) + [(None, None)]:
        if str(op) == "LITERAL":
            run.append(chr(arg))
            continue
        if len(run) > len(best):
            best = "".join(run)
        run = []
    if (flags | parsed.state.flags) & re.IGNORECASE:
        best = best.lower()
    return best if len(best) >= 3 else ""


def is_case_insensitive(regex: re.Pattern) -> bool:
    return bool(regex.flags & re.IGNORECASE)
