"""File-level completeness of a stage, like a SAM project snapshot.

A stage declares its expected inputs (an InputSnapshot: the latest one
counts). Outputs name their parent inputs (OutputFile.parents).

- good output: an output of a succeeded attempt that is not a duplicate
  completion;
- missing input: an expected input that no good output names as a parent;
- duplicate input: an input named by the outputs of more than one succeeded
  attempt (duplicate completions included: a merge must use only one). The
  several files one attempt writes from one input (a data file and its
  histogram file, say) count once.

A merge keeps subruns contiguous and in order; `merge_order_check` reports
gaps (subruns absent between a run's first and last) and inputs that come
after a later (run, subrun) in the declared order. Run and subrun come from
the input's metadata when declared, else from its name through
PRODMON_RUN_SUBRUN_PATTERNS (docs/progress.md).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache

from prodmon.models import Attempt, ExpectedInput, InputSnapshot, OutputFile, Stage
from prodmon.progress.conf import setting


@lru_cache(maxsize=8)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern, ...]:
    return tuple(re.compile(p) for p in patterns)


def parse_run_subrun(name: str, patterns: tuple[str, ...] | None = None) -> tuple[int, int] | None:
    """(run, subrun) from a file name, by the first pattern that matches."""
    patterns = patterns or tuple(setting("PRODMON_RUN_SUBRUN_PATTERNS"))
    base = name.rsplit("/", 1)[-1]
    for regex in _compiled(tuple(patterns)):
        m = regex.search(base)
        if m:
            return int(m.group("run")), int(m.group("subrun"))
    return None


def current_snapshot(*, stage_id: int) -> InputSnapshot | None:
    return InputSnapshot.objects.filter(stage_id=stage_id).order_by("-declared_at", "-pk").first()


def expected_input_names(*, snapshot: InputSnapshot) -> list[str]:
    return list(
        ExpectedInput.objects.filter(snapshot=snapshot)
        .order_by("position")
        .values_list("name", flat=True)
    )


@dataclass
class Duplicate:
    name: str
    attempts: int
    outputs: list[str]


@dataclass
class Completeness:
    stage_id: int
    snapshot: InputSnapshot | None
    expected: int = 0
    covered: int = 0  # inputs with a good output
    missing: list[str] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    unexpected_parents: int = 0  # parents named by good outputs but not expected

    @property
    def declared(self) -> bool:
        return self.snapshot is not None

    @property
    def pct_covered(self) -> float:
        return 100.0 * self.covered / self.expected if self.expected else 0.0


def _succeeded_outputs(stage_id: int):
    return OutputFile.objects.filter(
        stage_id=stage_id, attempt__status=Attempt.Status.SUCCEEDED
    ).values_list("attempt_id", "attempt__is_duplicate_completion", "name", "parents")


def stage_completeness(*, stage_id: int) -> Completeness:
    snapshot = current_snapshot(stage_id=stage_id)
    result = Completeness(stage_id=stage_id, snapshot=snapshot)
    if snapshot is None:
        return result
    names = expected_input_names(snapshot=snapshot)
    expected = set(names)
    good: set[str] = set()
    producers: dict[str, set[int]] = defaultdict(set)
    outputs: dict[str, list[str]] = defaultdict(list)
    unexpected: set[str] = set()
    for attempt_id, duplicate, out_name, parents in _succeeded_outputs(stage_id).iterator():
        for parent in parents or []:
            if parent not in expected:
                if not duplicate:
                    unexpected.add(parent)
                continue
            producers[parent].add(attempt_id)
            outputs[parent].append(out_name)
            if not duplicate:
                good.add(parent)
    result.expected = len(names)
    result.covered = len(good)
    result.missing = [n for n in names if n not in good]
    result.duplicates = [
        Duplicate(name=n, attempts=len(producers[n]), outputs=sorted(outputs[n]))
        for n in names
        if len(producers[n]) > 1
    ]
    result.unexpected_parents = len(unexpected)
    return result


def stage_missing_inputs(stage_id: int) -> list[str]:
    """Expected inputs of the stage with no good output, in declared order.
    Empty when the stage declares no inputs. (Recovery submits these.)"""
    return stage_completeness(stage_id=stage_id).missing


def stage_duplicate_inputs(stage_id: int) -> list[Duplicate]:
    return stage_completeness(stage_id=stage_id).duplicates


# --- merge order ----------------------------------------------------------------------


@dataclass
class Gap:
    run: int
    first: int  # first missing subrun
    last: int  # last missing subrun

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        if self.first == self.last:
            return f"run {self.run} subrun {self.first}"
        return f"run {self.run} subruns {self.first}–{self.last}"


@dataclass
class OutOfOrder:
    position: int  # 1-based, in the declared order
    name: str
    run: int
    subrun: int
    after: str  # the input it follows, which has a later (run, subrun)


@dataclass
class MergeCheck:
    source: str  # "declared inputs" or "parent outputs"
    checked: int = 0
    runs: int = 0
    gaps: list[Gap] = field(default_factory=list)
    out_of_order: list[OutOfOrder] = field(default_factory=list)
    repeated: list[str] = field(default_factory=list)  # the same (run, subrun) twice
    unparsed: list[str] = field(default_factory=list)
    ordered: bool = True  # whether the order was declared (so can be checked)

    @property
    def ok(self) -> bool:
        return not (self.gaps or self.out_of_order or self.repeated or self.unparsed)

    @property
    def missing_subruns(self) -> int:
        return sum(g.size for g in self.gaps)


def merge_order_check(
    items: list[tuple[str, int | None, int | None]], *, ordered: bool = True, source: str = ""
) -> MergeCheck:
    """Check (name, run, subrun) items, in merge order, for gaps, out-of-order
    and repeated subruns. Run/subrun None: parsed from the name."""
    check = MergeCheck(source=source, ordered=ordered)
    seen: dict[tuple[int, int], str] = {}
    by_run: dict[int, set[int]] = defaultdict(set)
    last: tuple[tuple[int, int], str] | None = None
    for position, (name, run, subrun) in enumerate(items, start=1):
        if run is None or subrun is None:
            parsed = parse_run_subrun(name)
            if parsed is None:
                check.unparsed.append(name)
                continue
            run, subrun = parsed
        check.checked += 1
        key = (run, subrun)
        if key in seen:
            check.repeated.append(name)
            continue
        seen[key] = name
        by_run[run].add(subrun)
        if ordered and last is not None and key < last[0]:
            check.out_of_order.append(
                OutOfOrder(position=position, name=name, run=run, subrun=subrun, after=last[1])
            )
        if last is None or key > last[0]:
            last = (key, name)
    check.runs = len(by_run)
    for run in sorted(by_run):
        subruns = sorted(by_run[run])
        for a, b in zip(subruns, subruns[1:], strict=False):
            if b > a + 1:
                check.gaps.append(Gap(run=run, first=a + 1, last=b - 1))
    return check


def stage_merge_check(*, stage_id: int) -> MergeCheck:
    """The merge-order check of a stage's inputs: its declared inputs in their
    declared order, or, when it declares none, the good outputs of the stages
    it depends on (then only gaps and repeats: no order was declared)."""
    snapshot = current_snapshot(stage_id=stage_id)
    if snapshot is not None:
        items = list(
            ExpectedInput.objects.filter(snapshot=snapshot)
            .order_by("position")
            .values_list("name", "run", "subrun")
        )
        return merge_order_check(items, ordered=True, source="declared inputs")
    parent_ids = list(Stage.objects.filter(dependents__pk=stage_id).values_list("pk", flat=True))
    names = sorted(
        set(
            OutputFile.objects.filter(
                stage_id__in=parent_ids,
                attempt__status=Attempt.Status.SUCCEEDED,
                attempt__is_duplicate_completion=False,
            ).values_list("name", flat=True)
        )
    )
    return merge_order_check(
        [(n, None, None) for n in names], ordered=False, source="outputs of the parent stages"
    )
