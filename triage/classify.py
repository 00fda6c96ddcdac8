"""The classification core: one failed attempt in, one verdict out.

Pure Python (no database): triage.services feeds it rules, settings and a log
tail, and stores the verdict; bench/loghub_ga.py times it. Precedence, first
hit wins:

1. signature rules, by rule precedence (`rule_sort_key`): a shifter's rules
   (priority 100 by default) before the built-ins; within equal priority the
   more specific rule (scoped to job types and exit codes) wins; then the
   older rule (lower id), built-ins by name.
2. an HTCondor hold code (and subcode) found in the tail;
3. the signal, or an exit code with a specific knowledge-base entry
   (an experiment's own codes first, then its code families);
4. a job that exited 0 but reported failure;
5. the cluster (template) of the error line, via drain3;
6. a generic exit-code entry ("an exception escaped");
7. "unknown".
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from triage import errorlines, kb
from triage.kb import htcondor
from triage.kb.rules import BUILTIN_RULES, BuiltinRule
from triage.mining import ClusterResult
from triage.regexguard import (
    MAX_LINE_CHARS,
    MatchBudget,
    RegexTimeout,
    compile_user_pattern,
    is_case_insensitive,
    required_literal,
    search_last,
)


class Source:
    RULE = "rule"
    EXIT_CODE = "exit-code"
    CLUSTER = "cluster"
    CHECK = "check"
    UNKNOWN = "unknown"

    CHOICES = (
        (RULE, "signature rule"),
        (EXIT_CODE, "exit code"),
        (CLUSTER, "log cluster"),
        (CHECK, "success check"),
        (UNKNOWN, "unknown"),
    )


@dataclass(frozen=True)
class CompiledRule:
    """A rule ready to run: a shifter's (rule_id set) or a built-in."""

    key: str
    regex: re.Pattern
    priority: int
    name: str
    rule_id: int | None = None
    builtin: BuiltinRule | None = None
    job_types: tuple[str, ...] = ()
    exit_codes: frozenset[int] = frozenset()
    # Texts of which a matching tail contains at least one (empty: no shortcut),
    # compared with the lower-cased tail when hints_lower is set.
    hints: tuple[str, ...] = ()
    hints_lower: bool = True
    class_id: int = 0  # a shifter's rule names an existing error class

    @property
    def specificity(self) -> int:
        return int(bool(self.job_types)) + int(bool(self.exit_codes))

    def applies_to(self, *, job_type: str, exit_code: int | None) -> bool:
        if self.job_types and (job_type or "").lower() not in self.job_types:
            return False
        return not (self.exit_codes and exit_code not in self.exit_codes)


def compile_user_rule(
    *,
    rule_id: int,
    pattern: str,
    name: str,
    ignore_case: bool = False,
    priority: int = 100,
    job_types: tuple[str, ...] = (),
    exit_codes: frozenset[int] = frozenset(),
    class_id: int = 0,
) -> CompiledRule:
    """A shifter's rule, checked by regexguard (raises UnsafePattern)."""
    regex = compile_user_pattern(pattern, ignore_case=ignore_case)
    literal = required_literal(pattern, regex.flags)
    return CompiledRule(
        key=f"rule:{rule_id}",
        regex=regex,
        priority=priority,
        name=name,
        rule_id=rule_id,
        job_types=job_types,
        exit_codes=exit_codes,
        hints=(literal,) if literal else (),
        hints_lower=is_case_insensitive(regex),
        class_id=class_id,
    )


def rule_sort_key(rule: CompiledRule) -> tuple:
    """Precedence: higher priority, then more specific, then older (deterministic)."""
    if rule.rule_id is not None:
        tie = (0, rule.rule_id, "")
    else:
        tie = (1, 0, rule.builtin.slug if rule.builtin else rule.key)
    return (-rule.priority, -rule.specificity, tie)


def builtin_rules() -> list[CompiledRule]:
    return [
        CompiledRule(
            key=r.key,
            regex=r.compile(),
            priority=r.priority,
            name=r.name,
            builtin=r,
            hints=r.hints,
        )
        for r in BUILTIN_RULES
    ]


class _TailText:
    """The whole tail as one string (and lower-cased), built once, for hints."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        self._text: str | None = None
        self._lower: str | None = None

    def may_match(self, rule: CompiledRule) -> bool:
        if not rule.hints:
            return True
        if rule.hints_lower:
            if self._lower is None:
                self._lower = "\n".join(self.lines).lower()
            return any(h in self._lower for h in rule.hints)
        if self._text is None:
            self._text = "\n".join(self.lines)
        return any(h in self._text for h in rule.hints)


_BUILTINS = builtin_rules()


@dataclass(frozen=True)
class ClassSpec:
    """What an error class should look like when it is first created."""

    key: str
    source: str
    title: str
    category: str = kb.Category.UNKNOWN
    transient: bool = False
    action: str = kb.Action.INVESTIGATE
    explanation: str = ""
    family: str = ""
    code: int | None = None
    subcode: int | None = None
    template: str = ""

    @classmethod
    def from_entry(cls, entry: kb.KbEntry, source: str = Source.EXIT_CODE) -> ClassSpec:
        return cls(
            key=entry.key,
            source=source,
            title=entry.title,
            category=entry.category,
            transient=entry.transient,
            action=entry.action,
            explanation=entry.describe(),
            family=entry.family,
            code=entry.code,
            subcode=entry.subcode,
        )

    @classmethod
    def from_builtin(cls, rule: BuiltinRule) -> ClassSpec:
        return cls(
            key=rule.key,
            source=Source.RULE,
            title=rule.name,
            category=rule.category,
            transient=rule.transient,
            action=rule.action,
            explanation=rule.explanation,
        )


@dataclass(frozen=True)
class Verdict:
    spec: ClassSpec
    line_index: int | None = None
    span: tuple[int, int] | None = None
    rule: CompiledRule | None = None
    cluster: ClusterResult | None = None
    detail: str = ""
    timed_out_rules: tuple[str, ...] = field(default=())

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def source(self) -> str:
        return self.spec.source


@dataclass(frozen=True)
class FailureFacts:
    exit_code: int | None
    signal: int | None
    reported_success: bool | None
    job_type: str = ""
    families: tuple[str, ...] = kb.DEFAULT_FAMILIES
    # An experiment's own codes: exit code -> ClassSpec.
    custom_codes: dict[int, ClassSpec] = field(default_factory=dict)


def classify_failure(
    *,
    lines: list[str],
    facts: FailureFacts,
    rules: Iterable[CompiledRule] = (),
    cluster: Callable[[str], ClusterResult | None] | None = None,
    budget_seconds: float = 0.5,
    include_builtins: bool = True,
) -> Verdict:
    """Classify one failed attempt from its log tail and exit facts."""
    lines = [line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] for line in lines]
    candidates = [
        r
        for r in [*rules, *(_BUILTINS if include_builtins else ())]
        if r.applies_to(job_type=facts.job_type, exit_code=facts.exit_code)
    ]
    candidates.sort(key=rule_sort_key)
    verdict, timed_out = match_rules(lines, candidates, facts, budget_seconds)
    if verdict is not None:
        return verdict

    hold = htcondor.parse_hold(lines)
    if hold is not None:
        code, subcode, index = hold
        entry = htcondor.lookup_hold(code, subcode)
        if entry is not None:
            return Verdict(
                spec=ClassSpec.from_entry(entry),
                line_index=index,
                detail=f"HTCondor hold code {code}"
                + (f", subcode {subcode}" if subcode is not None else ""),
                timed_out_rules=timed_out,
            )

    generic = None
    code_spec = exit_code_spec(facts)
    if code_spec is not None:
        spec, is_generic = code_spec
        if not is_generic:
            return Verdict(
                spec=spec,
                line_index=_headline(lines),
                detail=_exit_detail(facts),
                timed_out_rules=timed_out,
            )
        generic = spec

    if facts.exit_code == 0 and facts.signal is None and facts.reported_success is False:
        return Verdict(
            spec=REPORTED_FAILURE,
            line_index=_headline(lines),
            detail="exit code 0, but the job reported failure",
            timed_out_rules=timed_out,
        )

    found = errorlines.find_error_lines(lines)
    if found is not None and cluster is not None:
        line = lines[found.headline]
        result = cluster(line)
        if result is not None:
            return Verdict(
                spec=ClassSpec(
                    key=f"cluster:{result.class_id}",
                    source=Source.CLUSTER,
                    title=_cluster_title(result.template),
                    template=result.template,
                ),
                line_index=found.headline,
                cluster=result,
                detail=f"template {result.template[:200]}",
                timed_out_rules=timed_out,
            )

    if generic is not None:
        return Verdict(
            spec=generic,
            line_index=found.headline if found else None,
            detail=_exit_detail(facts),
            timed_out_rules=timed_out,
        )
    return Verdict(
        spec=unknown_spec(facts, has_log=bool(lines)),
        line_index=found.headline if found else None,
        detail=_exit_detail(facts),
        timed_out_rules=timed_out,
    )


def match_rules(
    lines: list[str],
    candidates: list[CompiledRule],
    facts: FailureFacts,
    budget_seconds: float,
) -> tuple[Verdict | None, tuple[str, ...]]:
    """Run rules in precedence order; the first that matches (and resolves) wins.

    Shifters' rules share one time budget; a rule that overruns it is skipped
    and reported in the second value. Built-in rules (our own, linear
    patterns) always run.
    """
    timed_out: list[str] = []
    deadline = time.monotonic() + budget_seconds
    text = _TailText(lines)
    for rule in candidates:
        if not text.may_match(rule):
            continue
        try:
            if rule.builtin is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RegexTimeout
                with MatchBudget(remaining) as budget:
                    hit = search_last(rule.regex, lines, budget)
            else:
                hit = search_last(rule.regex, lines)
        except RegexTimeout:
            timed_out.append(rule.key)
            continue
        if hit is None:
            continue
        verdict = _resolve(rule, lines, hit, facts)
        if verdict is not None:
            return (
                Verdict(
                    spec=verdict.spec,
                    line_index=verdict.line_index,
                    span=verdict.span,
                    rule=rule,
                    detail=verdict.detail,
                    timed_out_rules=tuple(timed_out),
                ),
                tuple(timed_out),
            )
    return None, tuple(timed_out)


def rule_spec(rule: CompiledRule) -> ClassSpec:
    if rule.builtin is not None:
        return ClassSpec.from_builtin(rule.builtin)
    return ClassSpec(key=rule.key, source=Source.RULE, title=rule.name)


def _resolve(rule: CompiledRule, lines, hit, facts: FailureFacts) -> Verdict | None:
    index, match = hit
    span = (match.start(), match.end())
    builtin = rule.builtin
    if builtin is None or not builtin.resolver:
        return Verdict(spec=rule_spec(rule), line_index=index, span=span, detail=rule.name)

    if builtin.resolver == "art_status":
        status = int(match.group(1))
        if status == 0:
            return None  # art says it succeeded; look further
        entry = kb.lookup_exit_code(status, ("art", "unix"))
        if entry is not None:
            return Verdict(
                spec=ClassSpec.from_entry(entry, Source.RULE),
                line_index=index,
                span=span,
                detail=f"art exit status {status}",
            )
        return Verdict(
            spec=ClassSpec(
                key=f"{builtin.key}:{status}",
                source=Source.RULE,
                title=f"art exited with status {status}",
                category=builtin.category,
                action=builtin.action,
                explanation=f"art finished with status {status}, which it does not define.",
            ),
            line_index=index,
            span=span,
        )

    if builtin.resolver == "cmssw_category":
        found = errorlines.cms_category(lines, index)
        if found is not None:
            category, at = found
            entry = kb.lookup_symbol("cmssw", category)
            if entry is not None:
                start = lines[at].find(category)
                return Verdict(
                    spec=ClassSpec.from_entry(entry, Source.RULE),
                    line_index=at,
                    span=(start, start + len(category)) if start >= 0 else None,
                    detail=f"cmsRun exception category {category}",
                )
        return Verdict(spec=ClassSpec.from_builtin(builtin), line_index=index, span=span)

    if builtin.resolver == "art_category":
        found = errorlines.art_outer_category(lines)
        if found is not None:
            category, at = found
            entry = kb.lookup_symbol("art", category)
            if entry is not None:
                start = lines[at].find(category)
                return Verdict(
                    spec=ClassSpec.from_entry(entry, Source.RULE),
                    line_index=at,
                    span=(start, start + len(category)),
                    detail=f"art exception category {category}",
                )
        return Verdict(spec=ClassSpec.from_builtin(builtin), line_index=index, span=span)

    return Verdict(spec=ClassSpec.from_builtin(builtin), line_index=index, span=span)


def exit_code_spec(facts: FailureFacts) -> tuple[ClassSpec, bool] | None:
    """(spec, is_generic) for the attempt's signal or exit code, or None."""
    if facts.signal:
        entry = kb.lookup_signal(facts.signal)
        if entry is not None:
            return ClassSpec.from_entry(entry), False
    code = facts.exit_code
    if code is None or code == 0:
        return None
    custom = facts.custom_codes.get(code)
    if custom is not None:
        return custom, False
    entry = kb.lookup_exit_code(code, facts.families)
    if entry is None:
        return None
    return ClassSpec.from_entry(entry), entry.generic


REPORTED_FAILURE = ClassSpec(
    key="check:reported-failure",
    source=Source.CHECK,
    title="Job reported failure (exit code 0)",
    category=kb.Category.UNKNOWN,
    transient=False,
    action=kb.Action.INVESTIGATE,
    explanation="The job's own script said it failed although its exit code was 0.",
)


def unknown_spec(facts: FailureFacts, *, has_log: bool) -> ClassSpec:
    if facts.signal:
        key, title = f"unknown:signal:{facts.signal}", f"Killed by signal {facts.signal}"
    elif facts.exit_code is not None:
        key, title = f"unknown:exit:{facts.exit_code}", f"Exit code {facts.exit_code}"
    else:
        key, title = "unknown:no-exit-code", "Ended without an exit code"
    if not has_log:
        title += " (no log)"
        key += ":no-log"
    return ClassSpec(
        key=key,
        source=Source.UNKNOWN,
        title=title,
        explanation="No rule, known exit code or log line explains this failure yet.",
    )


def _exit_detail(facts: FailureFacts) -> str:
    if facts.signal:
        return f"signal {facts.signal}"
    if facts.exit_code is not None:
        return f"exit code {facts.exit_code}"
    return ""


def _headline(lines: list[str]) -> int | None:
    found = errorlines.find_error_lines(lines)
    return found.headline if found else None


def _cluster_title(template: str) -> str:
    text = " ".join(template.split())
    return text if len(text) <= 120 else text[:117] + "…"


def cut_line(line: str) -> str:
    return line[:MAX_LINE_CHARS]
