"""Find the lines of a log tail that carry the error.

The last exception block wins: a Python traceback, a cmsRun "Begin Fatal
Exception" block or an art/cetlib "---- Category BEGIN" block. Without one,
the last line before the end that reads like an error, and failing that the
last meaningful line. Pure functions over a list of lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Only the end of a log matters; looking further back invites stale errors
# that the job recovered from.
SCAN_LINES = 400
FALLBACK_SCAN_LINES = 60
EXCERPT_BEFORE = 6
EXCERPT_AFTER = 3

ERROR_WORDS = re.compile(
    r"\b(?:error|errors|exception|fatal|fail|failed|failure|cannot|can't|could not|unable|"
    r"not found|no such|does not exist|denied|refused|timed? ?out|abort(?:ed|ing)?|killed|"
    r"segmentation|invalid|missing|corrupt(?:ed)?|exceeded|bad_alloc|bus error|"
    r"traceback|terminate called|assert(?:ion)?|unexpected)\b",
    re.IGNORECASE,
)

# Lines that close a log but carry no information about the failure.
_NOISE = re.compile(
    r"^\s*$"
    r"|^\s*[-=*#_~+.]{3,}\s*$"
    r"|Art has completed and will exit with status"
    r"|^-{4,5} ?End Fatal Exception"
    r"|^\s*-{4} \w+ END\s*$"
    r"|^%MSG\s*$"
    r"|^\s*(?:real|user|sys)\s+\d"
    r"|^\+ exit\b"
    r"|^\s*(?:exit(?:ing)?|exit code|exit status|return code)\b[\s:=]*-?\d+\s*$",
    re.IGNORECASE,
)

_TRACEBACK = re.compile(r"^\s*Traceback \(most recent call last\):")
_PY_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning)?\b(?::|$)")
_CMS_BEGIN = re.compile(r"^-{4,5} ?Begin Fatal Exception")
_CMS_END = re.compile(r"^-{4,5} ?End Fatal Exception")
_CMS_MESSAGE = re.compile(r"^\s*Exception Message:\s*$")
_CMS_CATEGORY = re.compile(r"An exception of category '(\w+)'")
_ART_BEGIN = re.compile(r"^(\s*)-{4} (\w+) BEGIN\s*$")
_ART_END = re.compile(r"^\s*-{4} \w+ END\s*$")


@dataclass(frozen=True)
class ErrorLines:
    headline: int  # index of the line that best states the error
    start: int  # first line of the error block
    end: int  # last line of the error block (inclusive)
    kind: str  # "python", "cmsrun", "art", "last-error", "last-line"


def is_noise(line: str) -> bool:
    return bool(_NOISE.search(line))


def find_error_lines(lines: list[str]) -> ErrorLines | None:
    """The error block and headline of a log tail, or None for an empty log."""
    if not lines:
        return None
    first = max(0, len(lines) - SCAN_LINES)
    candidates = [
        found
        for found in (
            _python_block(lines, first),
            _cmsrun_block(lines, first),
            _art_block(lines, first),
        )
        if found is not None
    ]
    if candidates:
        return max(candidates, key=lambda c: (c.end, c.start))
    return _last_error_line(lines)


def excerpt_range(found: ErrorLines, total: int) -> tuple[int, int]:
    """[start, stop) of the lines to show around a headline."""
    start = max(found.start, found.headline - EXCERPT_BEFORE)
    stop = min(total, max(found.headline + EXCERPT_AFTER + 1, min(found.end + 1, start + 10)))
    return start, stop


def _python_block(lines: list[str], first: int) -> ErrorLines | None:
    for i in range(len(lines) - 1, first - 1, -1):
        if _TRACEBACK.match(lines[i]):
            for j in range(i + 1, min(len(lines), i + 200)):
                line = lines[j]
                if line and not line[0].isspace() and _PY_EXCEPTION.match(line):
                    return ErrorLines(headline=j, start=i, end=j, kind="python")
            return None
    return None


def _cmsrun_block(lines: list[str], first: int) -> ErrorLines | None:
    for i in range(len(lines) - 1, first - 1, -1):
        if _CMS_BEGIN.match(lines[i]):
            end = i
            headline = None
            category_line = None
            for j in range(i + 1, min(len(lines), i + 200)):
                end = j
                if _CMS_END.match(lines[j]):
                    break
                if category_line is None and _CMS_CATEGORY.search(lines[j]):
                    category_line = j
                if headline is None and _CMS_MESSAGE.match(lines[j]):
                    for k in range(j + 1, min(len(lines), j + 5)):
                        if lines[k].strip():
                            headline = k
                            break
            if headline is None:
                headline = category_line if category_line is not None else i
            return ErrorLines(headline=headline, start=i, end=end, kind="cmsrun")
    return None


def _art_block(lines: list[str], first: int) -> ErrorLines | None:
    # The last top-level (least indented) BEGIN opens the last exception block.
    begins = [
        (i, len(m.group(1)))
        for i in range(first, len(lines))
        if (m := _ART_BEGIN.match(lines[i])) is not None
    ]
    if not begins:
        return None
    least = min(indent for _, indent in begins)
    start = max(i for i, indent in begins if indent == least)
    end = start
    content: list[int] = []
    for j in range(start + 1, min(len(lines), start + 300)):
        end = j
        if _ART_BEGIN.match(lines[j]):
            continue
        if _ART_END.match(lines[j]):
            if len(lines[j]) - len(lines[j].lstrip()) <= least:
                break
            continue
        if lines[j].strip():
            content.append(j)
    if not content:
        return ErrorLines(headline=start, start=start, end=end, kind="art")
    wordy = [j for j in content if ERROR_WORDS.search(lines[j])]
    return ErrorLines(headline=(wordy or content)[0], start=start, end=end, kind="art")


def _last_error_line(lines: list[str]) -> ErrorLines | None:
    last = None
    seen = 0
    for i in range(len(lines) - 1, -1, -1):
        if is_noise(lines[i]):
            continue
        if last is None:
            last = i
        if ERROR_WORDS.search(lines[i]):
            return ErrorLines(headline=i, start=i, end=i, kind="last-error")
        seen += 1
        if seen >= FALLBACK_SCAN_LINES:
            break
    if last is None:
        return None
    return ErrorLines(headline=last, start=last, end=last, kind="last-line")


def cms_category(lines: list[str], begin: int) -> tuple[str, int] | None:
    """The exception category named in the cmsRun block starting at `begin`."""
    for j in range(begin, min(len(lines), begin + 60)):
        if j > begin and _CMS_END.match(lines[j]):
            break
        match = _CMS_CATEGORY.search(lines[j])
        if match is not None:
            return match.group(1), j
    return None


def art_outer_category(lines: list[str]) -> tuple[str, int] | None:
    """The category of the last top-level art/cetlib exception block."""
    begins = [(i, m) for i, line in enumerate(lines) if (m := _ART_BEGIN.match(line)) is not None]
    if not begins:
        return None
    least = min(len(m.group(1)) for _, m in begins)
    i, match = max(((i, m) for i, m in begins if len(m.group(1)) == least), key=lambda t: t[0])
    return match.group(2), i
