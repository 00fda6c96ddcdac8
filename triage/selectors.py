"""Reads for triage, always scoped to the experiments the caller may see."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import (
    Count,
    Exists,
    F,
    FloatField,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
)
from django.db.models.functions import Coalesce, TruncDay, TruncHour
from django.utils import timezone

from logserver.selectors import log_line_url, log_pieces, log_tail
from prodmon.models import Attempt, Campaign, Job, Stage
from triage import kb
from triage.classify import (
    ClassSpec,
    CompiledRule,
    FailureFacts,
    builtin_rules,
    compile_user_rule,
    match_rules,
    rule_sort_key,
)
from triage.models import (
    AttemptClassification,
    CustomExitCode,
    ErrorClass,
    SignatureRule,
    TriageSettings,
)
from triage.regexguard import UnsafePattern

logger = logging.getLogger(__name__)

WINDOWS: dict[str, dt.timedelta | None] = {
    "24h": dt.timedelta(hours=24),
    "7d": dt.timedelta(days=7),
    "14d": dt.timedelta(days=14),
    "30d": dt.timedelta(days=30),
    "all": None,
}
DEFAULT_WINDOW = "7d"


def tail_bytes() -> int:
    return int(getattr(settings, "TRIAGE_TAIL_BYTES", 64 * 1024))


# --- the inputs of classification ------------------------------------------------


@dataclass(frozen=True)
class Tail:
    """An attempt's log tail as lines, with each line's byte offset in the log."""

    lines: list[str]
    offsets: list[int]
    start: int  # byte offset of the first line (0: the tail is the whole log)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def attempt_tail(*, attempt: Attempt, max_bytes: int | None = None) -> Tail:
    """The last `max_bytes` of the log, split into lines. A line cut by the window's
    start, or by a gap of missing bytes, is dropped rather than shown half."""
    max_bytes = max_bytes or tail_bytes()
    segments = log_tail(attempt=attempt, max_bytes=max_bytes)
    lines: list[str] = []
    offsets: list[int] = []
    window_start = max(attempt.log_bytes - max_bytes, 0)
    partial_start = window_start > 0
    for segment in segments:
        if segment.is_gap:
            partial_start = True
            continue
        pos = segment.offset
        parts = segment.text.split("\n")
        for i, part in enumerate(parts):
            length = len(part.encode("utf-8", "replace"))
            drop = i == 0 and partial_start
            last = i == len(parts) - 1
            if not drop and not (last and part == ""):
                lines.append(part.rstrip("\r"))
                offsets.append(pos)
            pos += length + 1
        partial_start = False
    start = offsets[0] if offsets else window_start
    return Tail(lines=lines, offsets=offsets, start=start)


# Counting lines before the tail reads the log from its start; beyond this
# many bytes the line number stays relative to the tail.
LINE_COUNT_MAX_BYTES = 8 * 1024 * 1024


def lines_before(*, attempt: Attempt, offset: int) -> int | None:
    """How many lines the log viewer numbers before byte `offset` (None: too far)."""
    if offset <= 0:
        return 0
    if offset > LINE_COUNT_MAX_BYTES:
        return None
    count = 0
    for piece in log_pieces(attempt_id=attempt.pk, start=0, end=offset):
        # The viewer shows a gap of missing bytes as one pseudo-line.
        count += 1 if piece.is_gap else piece.data.count(b"\n")
    return count


def attempt_line_url(*, attempt: Attempt, line_number: int) -> str:
    return log_line_url(attempt=attempt, line_no=line_number)


def triage_settings_for(*, experiment_id: int) -> TriageSettings | None:
    return TriageSettings.objects.filter(experiment_id=experiment_id).first()


def custom_code_specs(*, experiment_id: int) -> dict[int, ClassSpec]:
    return {
        c.code: ClassSpec(
            key=f"exit:{c.family}:{c.code}",
            source="exit-code",
            title=c.title,
            category=c.category,
            transient=c.transient,
            action=c.suggested_action or kb.Action.INVESTIGATE,
            explanation=c.explanation,
            family=c.family,
            code=c.code,
        )
        for c in CustomExitCode.objects.filter(experiment_id=experiment_id)
    }


def failure_facts(*, attempt: Attempt) -> FailureFacts:
    stage = attempt.job.stage
    experiment_id = stage.campaign.experiment_id
    config = triage_settings_for(experiment_id=experiment_id)
    families = kb.families_for(
        job_type=stage.job_type,
        code_families=config.code_families if config else None,
        job_type_families=config.job_type_families if config else None,
    )
    return FailureFacts(
        exit_code=attempt.exit_code,
        signal=attempt.signal,
        reported_success=attempt.reported_success,
        job_type=stage.job_type,
        families=families,
        custom_codes=custom_code_specs(experiment_id=experiment_id),
    )


# A rule not saved yet sorts after every saved one (it is the newest).
CANDIDATE_RULE_ID = 10**12


def compile_rule(rule: SignatureRule) -> CompiledRule:
    return compile_user_rule(
        rule_id=rule.pk or CANDIDATE_RULE_ID,
        pattern=rule.pattern,
        name=rule.name,
        ignore_case=rule.ignore_case,
        priority=rule.priority,
        job_types=rule.job_type_list(),
        exit_codes=rule.exit_code_list(),
        class_id=rule.error_class_id or 0,
    )


def compiled_rules(*, experiment_id: int, exclude_id: int | None = None) -> list[CompiledRule]:
    out = []
    rules = SignatureRule.objects.filter(experiment_id=experiment_id, enabled=True)
    if exclude_id is not None:
        rules = rules.exclude(pk=exclude_id)
    for rule in rules:
        try:
            out.append(compile_rule(rule))
        except UnsafePattern:
            logger.warning("skipping signature rule %s: its pattern no longer compiles", rule.pk)
    return out


# --- classes, summaries ----------------------------------------------------------


def error_class_get(*, pk: int, experiment_ids: set[int]) -> ErrorClass | None:
    return (
        ErrorClass.objects.select_related("experiment", "merged_into", "named_by")
        .filter(pk=pk, experiment_id__in=experiment_ids)
        .first()
    )


@dataclass
class SummaryFilters:
    experiment_ids: set[int]
    experiment: int | None = None
    campaign: int | None = None
    stage: int | None = None
    site: str = ""
    window: str = DEFAULT_WINDOW
    status: str = ""
    category: str = ""

    @property
    def since(self) -> dt.datetime | None:
        span = WINDOWS.get(self.window)
        return timezone.now() - span if span else None

    def job_table_params(self) -> dict[str, str]:
        """The same filters, named as the job table (/jobs/) takes them."""
        params = {"state": "failed"}
        for name in ("experiment", "campaign", "stage"):
            value = getattr(self, name)
            if value:
                params[name] = str(value)
        if self.site:
            params["site"] = self.site
        return params


def classification_list(*, filters: SummaryFilters) -> QuerySet[AttemptClassification]:
    qs = AttemptClassification.objects.filter(
        experiment_id__in=filters.experiment_ids, error_class__merged_into__isnull=True
    )
    if filters.experiment:
        qs = qs.filter(experiment_id=filters.experiment)
    if filters.campaign:
        qs = qs.filter(campaign_id=filters.campaign)
    if filters.stage:
        qs = qs.filter(stage_id=filters.stage)
    if filters.site:
        qs = qs.filter(site__iexact=filters.site)
    if filters.since is not None:
        qs = qs.filter(seen_at__gte=filters.since)
    if filters.status:
        qs = qs.filter(error_class__status=filters.status)
    if filters.category:
        qs = qs.filter(error_class__category=filters.category)
    return qs


@dataclass
class ClassRow:
    error_class: ErrorClass
    failures: int
    wall_s: float
    core_s: float
    first_seen: dt.datetime | None
    last_seen: dt.datetime | None
    sites: int = 0


@dataclass
class MatrixCell:
    failures: int = 0
    wall_s: float = 0.0
    top_class: ErrorClass | None = None
    top_count: int = 0


@dataclass
class Summary:
    filters: SummaryFilters
    rows: list[ClassRow]
    total_failures: int
    total_wall_s: float
    stages: list[Stage] = field(default_factory=list)
    sites: list[str] = field(default_factory=list)
    matrix: dict[tuple[int, str], MatrixCell] = field(default_factory=dict)
    computed_at: dt.datetime | None = None

    def cell(self, stage_id: int, site: str) -> MatrixCell | None:
        return self.matrix.get((stage_id, site))


_wall = Coalesce(F("wall_s"), 0.0, output_field=FloatField())
_core = Coalesce(F("wall_s") * F("cores"), 0.0, output_field=FloatField())


def error_summary(*, filters: SummaryFilters, limit: int = 200) -> Summary:
    """Failures, wall time lost, and the stage x site matrix under the filters.

    Cached for TRIAGE_SUMMARY_CACHE_SECONDS (60; 0 turns it off) per set of
    filters: at a million attempts the window holds hundreds of thousands of
    classifications, and the page says when its figures were computed."""
    ttl = int(getattr(settings, "TRIAGE_SUMMARY_CACHE_SECONDS", 60))
    key = (
        "triage:summary:"
        + hashlib.sha256(
            repr(
                (
                    sorted(filters.experiment_ids),
                    filters.experiment,
                    filters.campaign,
                    filters.stage,
                    filters.site.lower(),
                    filters.window,
                    filters.status,
                    filters.category,
                    limit,
                )
            ).encode()
        ).hexdigest()
    )
    if ttl > 0:
        found = cache.get(key)
        if found is not None:
            return found
    summary = _error_summary(filters=filters, limit=limit)
    if ttl > 0:
        cache.set(key, summary, ttl)
    return summary


_CELLS_SQL = """
SELECT DISTINCT ON (g.stage_id, g.site) g.stage_id, g.site, g.error_class_id, g.n,
       sum(g.n) OVER w, sum(g.wall) OVER w
FROM ({inner}) g
WINDOW w AS (PARTITION BY g.stage_id, g.site)
ORDER BY g.stage_id, g.site, g.n DESC, g.error_class_id
"""


def _error_summary(*, filters: SummaryFilters, limit: int) -> Summary:
    """Two grouped scans: per class (the rows), and per stage x site cell with
    its top class (the matrix; the totals are the cells' sums)."""
    qs = classification_list(filters=filters)
    per_class = list(
        qs.values("error_class_id")
        .annotate(n=Count("id"), wall=Sum(_wall), core=Sum(_core))
        .annotate(first=Min("seen_at"), last=Max("seen_at"), sites=Count("site", distinct=True))
        .order_by("-wall", "-n", "error_class_id")[:limit]
    )
    inner = (
        qs.values("stage_id", "site", "error_class_id")
        .annotate(n=Count("id"), wall=Sum(_wall))
        .order_by()
    )
    cells: dict[tuple[int, str], MatrixCell] = {}
    top_ids: dict[tuple[int, str], tuple[int, int]] = {}
    total_n, total_wall = 0, 0.0
    if connection.vendor == "postgresql":
        sql, params = inner.query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(_CELLS_SQL.format(inner=sql), params)
            for stage_id, site, cid, n, cell_n, cell_wall in cursor.fetchall():
                cells[(stage_id, site)] = MatrixCell(failures=int(cell_n), wall_s=cell_wall or 0.0)
                top_ids[(stage_id, site)] = (cid, n)
    else:  # SQLite: the same from the (small) groups in Python
        for g in inner:
            key, n = (g["stage_id"], g["site"]), g["n"]
            cell = cells.setdefault(key, MatrixCell())
            cell.failures += n
            cell.wall_s += g["wall"] or 0.0
            best = top_ids.get(key)
            if best is None or n > best[1] or (n == best[1] and g["error_class_id"] < best[0]):
                top_ids[key] = (g["error_class_id"], n)
    for cell in cells.values():
        total_n += cell.failures
        total_wall += cell.wall_s
    classes = ErrorClass.objects.select_related("experiment").in_bulk(
        {r["error_class_id"] for r in per_class} | {cid for cid, _ in top_ids.values()}
    )
    rows = [
        ClassRow(
            error_class=classes[r["error_class_id"]],
            failures=r["n"],
            wall_s=r["wall"] or 0.0,
            core_s=r["core"] or 0.0,
            first_seen=r["first"],
            last_seen=r["last"],
            sites=r["sites"],
        )
        for r in per_class
        if r["error_class_id"] in classes
    ]
    totals = {"n": total_n, "wall": total_wall}
    for key, (cid, n) in top_ids.items():
        cells[key].top_class = classes.get(cid)
        cells[key].top_count = n
    stages = list(
        Stage.objects.filter(pk__in={k[0] for k in cells})
        .select_related("campaign")
        .order_by("campaign__name", "order", "name")
    )
    sites = sorted({k[1] for k in cells}, key=lambda s: (s == "", s.lower()))
    return Summary(
        filters=filters,
        computed_at=timezone.now(),
        rows=rows,
        total_failures=totals["n"] or 0,
        total_wall_s=totals["wall"] or 0.0,
        stages=stages,
        sites=sites,
        matrix=cells,
    )


@dataclass
class Trend:
    labels: list[dt.datetime]
    counts: list[int]


def error_class_trend(*, error_class: ErrorClass, hours: int = 24, days: int = 14) -> dict:
    """Hourly counts over the last `hours` and daily counts over the last `days` (UTC)."""
    now = timezone.now()
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    base = AttemptClassification.objects.filter(error_class=error_class)

    hour_start = this_hour - dt.timedelta(hours=hours - 1)
    hourly = {
        r["t"]: r["n"]
        for r in base.filter(seen_at__gte=hour_start)
        .annotate(t=TruncHour("seen_at", tzinfo=dt.UTC))
        .values("t")
        .annotate(n=Count("id"))
        .order_by()
    }
    day_start = today - dt.timedelta(days=days - 1)
    daily = {
        r["t"]: r["n"]
        for r in base.filter(seen_at__gte=day_start)
        .annotate(t=TruncDay("seen_at", tzinfo=dt.UTC))
        .values("t")
        .annotate(n=Count("id"))
        .order_by()
    }
    hour_labels = [hour_start + dt.timedelta(hours=i) for i in range(hours)]
    day_labels = [day_start + dt.timedelta(days=i) for i in range(days)]
    return {
        "hourly": Trend(hour_labels, [_bucket(hourly, t) for t in hour_labels]),
        "daily": Trend(day_labels, [_bucket(daily, t) for t in day_labels]),
    }


def _bucket(counts: dict, label: dt.datetime) -> int:
    for key, value in counts.items():
        if key is not None and key.astimezone(dt.UTC) == label.astimezone(dt.UTC):
            return value
    return 0


@dataclass
class Affected:
    campaigns: list[dict]
    stages: list[dict]
    sites: list[dict]
    nodes: list[dict]


def error_class_affected(*, error_class: ErrorClass, limit: int = 15) -> Affected:
    base = AttemptClassification.objects.filter(error_class=error_class)

    def top(*fields):
        return list(
            base.values(*fields)
            .annotate(n=Count("id"), wall=Sum(_wall), last=Max("seen_at"))
            .order_by("-n", *fields)[:limit]
        )

    campaigns = top("campaign_id", "campaign__name")
    stages = top("stage_id", "stage__name", "campaign__name")
    sites = top("site")
    nodes = top("node_id", "node__hostname", "site")
    return Affected(campaigns=campaigns, stages=stages, sites=sites, nodes=nodes)


def error_class_samples(*, error_class: ErrorClass, limit: int = 10) -> list[AttemptClassification]:
    return list(
        AttemptClassification.objects.filter(error_class=error_class)
        .select_related("attempt__job__stage__campaign", "node", "rule")
        .order_by("-seen_at", "-pk")[:limit]
    )


def attempt_classification_get(*, attempt: Attempt) -> AttemptClassification | None:
    return (
        AttemptClassification.objects.select_related("error_class", "rule")
        .filter(attempt=attempt)
        .first()
    )


def campaign_choices(*, experiment_ids: set[int]) -> QuerySet[Campaign]:
    return Campaign.objects.filter(experiment_id__in=experiment_ids).select_related("experiment")


def stage_choices(*, experiment_ids: set[int]) -> QuerySet[Stage]:
    return Stage.objects.filter(campaign__experiment_id__in=experiment_ids).select_related(
        "campaign__experiment"
    )


def site_choices(*, experiment_ids: set[int]) -> list[str]:
    """Sites for the filter's suggestions: those of the nodes judged for these
    experiments (a node-health row exists once a node has an ended attempt).
    A DISTINCT over every classification would scan millions of rows."""
    from triage.models import NodeHealth

    return sorted(
        s
        for s in NodeHealth.objects.filter(experiment_id__in=experiment_ids)
        .values_list("node__site", flat=True)
        .distinct()
        .order_by()
        if s
    )


# --- rules -----------------------------------------------------------------------


def rule_list(*, experiment_ids: set[int]) -> QuerySet[SignatureRule]:
    return SignatureRule.objects.filter(experiment_id__in=experiment_ids).select_related(
        "experiment", "error_class", "updated_by"
    )


def rule_get(*, pk: int, experiment_ids: set[int]) -> SignatureRule | None:
    return rule_list(experiment_ids=experiment_ids).filter(pk=pk).first()


def builtin_rule_list():
    return sorted(builtin_rules(), key=rule_sort_key)


@dataclass
class PreviewHit:
    classification: AttemptClassification
    line: str
    line_index: int
    span: tuple[int, int] | None
    outcome: str  # "steals", "keeps" (already this class), "shadowed"
    winner: str = ""


@dataclass
class RulePreview:
    scanned: int
    matched: int
    steals: list[tuple[ErrorClass, int]]
    shadowed: int
    already: int
    hits: list[PreviewHit]
    timed_out: bool = False
    stolen_attempt_ids: list[int] = field(default_factory=list)


PREVIEW_FAILURES = 200
PREVIEW_TAIL_BYTES = 32 * 1024


def rule_preview(
    *,
    experiment_id: int,
    candidate: CompiledRule,
    exclude_rule_id: int | None = None,
    limit: int = PREVIEW_FAILURES,
    sample_limit: int = 12,
) -> RulePreview:
    """Try a rule on the experiment's most recent classified failures.

    For each, run the candidate together with the experiment's other rules and
    the built-ins in precedence order (clusters and exit codes come after
    rules, so they never stop a rule): the candidate *steals* a failure when
    it wins and the failure is in another class today, and is *shadowed* when
    it matches but a stronger rule wins.
    """
    others = compiled_rules(experiment_id=experiment_id, exclude_id=exclude_rule_id)
    recent = list(
        AttemptClassification.objects.filter(experiment_id=experiment_id)
        .select_related("attempt__job__stage", "error_class")
        .order_by("-seen_at", "-pk")[:limit]
    )
    steals: Counter[int] = Counter()
    hits: list[PreviewHit] = []
    stolen: list[int] = []
    matched = shadowed = already = 0
    timed_out = False
    budget = float(getattr(settings, "TRIAGE_PREVIEW_BUDGET_SECONDS", 5.0))
    deadline = timezone.now() + dt.timedelta(seconds=budget)
    for item in recent:
        if timezone.now() > deadline:
            timed_out = True
            break
        attempt = item.attempt
        tail = attempt_tail(attempt=attempt, max_bytes=PREVIEW_TAIL_BYTES)
        stage = attempt.job.stage
        facts = FailureFacts(
            exit_code=attempt.exit_code,
            signal=attempt.signal,
            reported_success=attempt.reported_success,
            job_type=stage.job_type,
        )
        if not candidate.applies_to(job_type=stage.job_type, exit_code=attempt.exit_code):
            continue
        alone, slow = match_rules(tail.lines, [candidate], facts, 0.2)
        if slow:
            timed_out = True
            continue
        if alone is None:
            continue
        matched += 1
        pool = [
            r
            for r in [candidate, *others, *builtin_rules()]
            if r.applies_to(job_type=stage.job_type, exit_code=attempt.exit_code)
        ]
        pool.sort(key=rule_sort_key)
        winner, _ = match_rules(tail.lines, pool, facts, 0.5)
        wins = winner is not None and winner.rule is candidate
        if not wins:
            shadowed += 1
            outcome = "shadowed"
        elif candidate.class_id and item.error_class_id == candidate.class_id:
            already += 1
            outcome = "keeps"
        else:
            steals[item.error_class_id] += 1
            stolen.append(attempt.pk)
            outcome = "steals"
        if len(hits) < sample_limit:
            hits.append(
                PreviewHit(
                    classification=item,
                    line=tail.lines[alone.line_index],
                    line_index=alone.line_index,
                    span=alone.span,
                    outcome=outcome,
                    winner=winner.rule.name if winner and winner.rule and not wins else "",
                )
            )
    classes = ErrorClass.objects.in_bulk(list(steals))
    return RulePreview(
        scanned=len(recent),
        matched=matched,
        steals=[(classes[cid], n) for cid, n in steals.most_common() if cid in classes],
        shadowed=shadowed,
        already=already,
        hits=hits,
        timed_out=timed_out,
        stolen_attempt_ids=stolen,
    )


def attempt_ids_for_reclassify(*, experiment_id: int, limit: int = PREVIEW_FAILURES) -> list[int]:
    return list(
        AttemptClassification.objects.filter(experiment_id=experiment_id)
        .order_by("-seen_at", "-pk")
        .values_list("attempt_id", flat=True)[:limit]
    )


def unclassified_failed_attempt_ids(*, since: dt.datetime, limit: int = 1000) -> list[int]:
    return list(
        Attempt.objects.filter(
            status=Attempt.Status.FAILED, ended_at__gte=since, classification__isnull=True
        )
        .order_by("ended_at")
        .values_list("pk", flat=True)[:limit]
    )


# --- node health and liveness (issue 5) ------------------------------------------------


def node_exclusion_list(experiment_id: int | None = None) -> list[str]:
    """Hostnames flagged as black holes (for one experiment, or any): what the
    submission layer excludes (prodmon.submission.base.node_exclusion_list)."""
    from triage.models import NodeHealth

    qs = NodeHealth.objects.filter(state=NodeHealth.State.BLACK_HOLE)
    if experiment_id is not None:
        qs = qs.filter(experiment_id=experiment_id)
    return sorted(set(qs.values_list("node__hostname", flat=True)))


def node_exclusion_rows(*, experiment_ids: set[int]) -> list[dict]:
    """The exclusion list with why, for the JSON export."""
    from triage.models import NodeHealth

    rows = (
        NodeHealth.objects.filter(
            experiment_id__in=experiment_ids, state=NodeHealth.State.BLACK_HOLE
        )
        .select_related("node", "experiment")
        .order_by("node__hostname", "experiment__name")
    )
    out: dict[str, dict] = {}
    for h in rows:
        entry = out.setdefault(
            h.node.hostname,
            {"hostname": h.node.hostname, "site": h.node.site, "flags": []},
        )
        entry["flags"].append(
            {
                "experiment": h.experiment.name,
                "since": h.since.isoformat(),
                "manual": h.manual,
                "reason": h.note if h.manual else h.evidence.get("reason", ""),
            }
        )
    return list(out.values())


def attempt_liveness(attempt_ids: list[int]) -> dict[int, str]:
    """{attempt_id: "ok" | "lost" | "hung"} for the attempts the sweep has seen
    (the hook prodmon.actions asks: lost and hung attempts may be retried)."""
    from triage.models import AttemptLiveness

    return dict(
        AttemptLiveness.objects.filter(attempt_id__in=list(attempt_ids)).values_list(
            "attempt_id", "state"
        )
    )


def campaign_liveness_counts(*, campaign_id: int) -> dict[str, int]:
    """Open attempts of a campaign the liveness sweep calls lost or hung."""
    from triage.models import AttemptLiveness

    rows = (
        AttemptLiveness.objects.filter(
            campaign_id=campaign_id,
            attempt__status__in=[Attempt.Status.QUEUED, Attempt.Status.RUNNING],
        )
        .exclude(state=AttemptLiveness.State.OK)
        .values("state")
        .annotate(n=Count("pk"))
        .order_by()
    )
    counts = {"lost": 0, "hung": 0}
    counts.update({r["state"]: r["n"] for r in rows})
    return counts


@dataclass
class NodeRow:
    node_id: int
    hostname: str
    site: str
    attempts: int = 0
    failures: int = 0
    state: str = "healthy"
    health_id: int | None = None
    manual: bool = False
    since: dt.datetime | None = None
    reason: str = ""
    classes: list[tuple[str, int]] = field(default_factory=list)

    @property
    def failure_rate(self) -> float:
        return self.failures / self.attempts if self.attempts else 0.0


@dataclass
class SiteRow:
    site: str
    attempts: int = 0
    failures: int = 0
    state: str = "healthy"
    reason: str = ""
    nodes: list[NodeRow] = field(default_factory=list)

    @property
    def failure_rate(self) -> float:
        return self.failures / self.attempts if self.attempts else 0.0

    def count(self, state: str) -> int:
        return sum(1 for n in self.nodes if n.state == state)

    @property
    def black_holes(self) -> int:
        return self.count("black_hole")

    @property
    def suspects(self) -> int:
        return self.count("suspect")


NODE_WINDOWS = {
    "6h": dt.timedelta(hours=6),
    "24h": dt.timedelta(hours=24),
    "7d": dt.timedelta(days=7),
}


def node_health_overview(
    *, experiment_ids: set[int], window: str = "24h", site: str = ""
) -> list[SiteRow]:
    """Sites (worst first), each with its nodes: attempts, failures, top classes
    and health in the window. Nodes flagged but idle are listed too."""
    from django.db.models import Q

    from triage.models import NodeHealth
    from triage.nodehealth.detector import assess_site, shrunk_rate

    since = timezone.now() - NODE_WINDOWS.get(window, NODE_WINDOWS["24h"])
    attempts = Attempt.objects.filter(
        job__stage__campaign__experiment_id__in=experiment_ids,
        status__in=Attempt.ENDED,
        ended_at__gte=since,
        node__isnull=False,
    )
    if site:
        attempts = attempts.filter(node__site=site)
    nodes: dict[int, NodeRow] = {}
    for r in (
        attempts.values("node_id", "node__hostname", "node__site")
        .annotate(n=Count("pk"), f=Count("pk", filter=Q(status=Attempt.Status.FAILED)))
        .order_by()
    ):
        nodes[r["node_id"]] = NodeRow(
            r["node_id"], r["node__hostname"], r["node__site"], attempts=r["n"], failures=r["f"]
        )
    health = NodeHealth.objects.filter(experiment_id__in=experiment_ids).select_related("node")
    if site:
        health = health.filter(node__site=site)
    rank = {"black_hole": 2, "suspect": 1, "healthy": 0}
    for h in health:
        row = nodes.get(h.node_id)
        if row is None:
            if h.state == NodeHealth.State.HEALTHY:
                continue
            row = nodes[h.node_id] = NodeRow(h.node_id, h.node.hostname, h.node.site)
        if row.health_id is None or rank[h.state] > rank[row.state]:
            row.state, row.health_id, row.manual, row.since = h.state, h.pk, h.manual, h.since
            row.reason = h.note if h.manual else h.evidence.get("reason", "")
    for r in (
        AttemptClassification.objects.filter(
            experiment_id__in=experiment_ids, seen_at__gte=since, node_id__in=list(nodes)
        )
        .values("node_id", "error_class__title")
        .annotate(c=Count("pk"))
        .order_by("node_id", "-c")
    ):
        row = nodes[r["node_id"]]
        if len(row.classes) < 3:
            row.classes.append((r["error_class__title"], r["c"]))

    sites: dict[str, SiteRow] = {}
    for row in nodes.values():
        s = sites.setdefault(row.site, SiteRow(row.site))
        s.nodes.append(row)
        s.attempts += row.attempts
        s.failures += row.failures
    total_n = sum(s.attempts for s in sites.values())
    total_f = sum(s.failures for s in sites.values())
    for s in sites.values():
        # The site against all the others: a whole site going bad shows here.
        baseline = shrunk_rate(total_f - s.failures, total_n - s.attempts, config=_hc())
        verdict = assess_site(
            failures=s.failures, attempts=s.attempts, baseline_rate=baseline, config=_hc()
        )
        s.state, s.reason = verdict.state, verdict.evidence.reason
        s.nodes.sort(key=lambda n: (-rank[n.state], -n.failure_rate, n.hostname))
    return sorted(
        sites.values(),
        key=lambda s: (-(s.black_holes * 1000 + s.suspects), -s.failure_rate, s.site),
    )


def _hc():
    from triage.services import node_health_config

    return node_health_config()


def node_health_get(*, pk: int, experiment_ids: set[int]):
    from triage.models import NodeHealth

    return (
        NodeHealth.objects.select_related("node", "experiment")
        .filter(pk=pk, experiment_id__in=experiment_ids)
        .first()
    )


def node_health_events(*, health, limit: int = 50) -> list:
    return list(health.events.select_related("actor")[:limit])


def node_hourly_outcomes(*, health, hours: int = 48) -> list[dict]:
    """Ended attempts of the node per hour, oldest first: the timeline strip."""
    from django.db.models import Q

    now = timezone.now()
    start = (now - dt.timedelta(hours=hours - 1)).replace(minute=0, second=0, microsecond=0)
    rows = (
        Attempt.objects.filter(
            node_id=health.node_id,
            job__stage__campaign__experiment_id=health.experiment_id,
            status__in=Attempt.ENDED,
            ended_at__gte=start,
        )
        .annotate(hour=TruncHour("ended_at"))
        .values("hour")
        .annotate(n=Count("pk"), f=Count("pk", filter=Q(status=Attempt.Status.FAILED)))
        .order_by()
    )
    by_hour = {r["hour"]: r for r in rows}
    peak = max((r["n"] for r in rows), default=0) or 1
    out = []
    for i in range(hours):
        hour = start + dt.timedelta(hours=i)
        r = by_hour.get(hour, {"n": 0, "f": 0})
        out.append(
            {
                "hour": hour,
                "attempts": r["n"],
                "failures": r["f"],
                "ok_pct": round(100 * (r["n"] - r["f"]) / peak),
                "bad_pct": round(100 * r["f"] / peak),
            }
        )
    return out


def node_recent_failures(*, health, limit: int = 20) -> list[Attempt]:
    return list(
        Attempt.objects.filter(
            node_id=health.node_id,
            job__stage__campaign__experiment_id=health.experiment_id,
            status=Attempt.Status.FAILED,
        )
        .select_related("job__stage__campaign", "classification__error_class")
        .order_by(F("ended_at").desc(nulls_last=True), "-pk")[:limit]
    )


# --- hooks read by the action layer (prodmon/actions/hooks.py) -----------------


def job_failure_classes(job_ids: list[int]) -> dict[int, dict]:
    """The class of each job's latest classified failed attempt:
    {job_id: {"name": title, "transient": bool}}. transient=False marks a
    permanent class, which the action layer retries only when forced."""
    rows = (
        AttemptClassification.objects.filter(attempt__job_id__in=list(job_ids))
        .select_related("error_class")
        .order_by("attempt__job_id", "-attempt__number")
        .values_list("attempt__job_id", "error_class__title", "error_class__transient")
    )
    out: dict[int, dict] = {}
    for job_id, title, transient in rows:
        out.setdefault(job_id, {"name": title, "transient": bool(transient)})
    return out


def error_class_job_ids(error_class: str, experiment_ids: set[int]) -> set[int]:
    """Jobs whose latest classified failure is in the class given by id or key."""
    classes = ErrorClass.objects.filter(experiment_id__in=experiment_ids)
    classes = (
        classes.filter(pk=int(error_class))
        if str(error_class).isdigit()
        else classes.filter(key=error_class)
    )
    latest: dict[int, int] = {}
    rows = (
        AttemptClassification.objects.filter(experiment_id__in=experiment_ids)
        .order_by("attempt__job_id", "-attempt__number")
        .values_list("attempt__job_id", "error_class_id")
    )
    for job_id, class_id in rows:
        latest.setdefault(job_id, class_id)
    wanted = set(classes.values_list("pk", flat=True))
    return {job_id for job_id, class_id in latest.items() if class_id in wanted}


def error_class_attempt_ids(error_class: str, experiment_ids: set[int]) -> set[int]:
    """Attempts classified in the class given by id or key (log search's filter)."""
    rows = AttemptClassification.objects.filter(experiment_id__in=experiment_ids)
    if str(error_class).isdigit():
        rows = rows.filter(error_class_id=int(error_class))
    else:
        rows = rows.filter(error_class__key=error_class)
    return set(rows.values_list("attempt_id", flat=True))


# --- what is still open in triage (log retention asks) ------------------------

OPEN_CLASS_STATUSES = (
    ErrorClass.Status.NEW,
    ErrorClass.Status.ONGOING,
    ErrorClass.Status.REGRESSED,
)


def open_error_class_ids(*, experiment_id: int) -> set[int]:
    """Classes of the experiment still open in triage (new, ongoing or regressed).

    A class merged into another is open when the class it was merged into
    (followed to the end of the chain) is."""
    rows = ErrorClass.objects.filter(experiment_id=experiment_id).values_list(
        "pk", "merged_into_id", "status"
    )
    parent = {pk: merged for pk, merged, _ in rows}
    status = {pk: st for pk, _, st in rows}

    def root(pk: int) -> int:
        seen = {pk}
        while parent.get(pk) is not None and parent[pk] in status and parent[pk] not in seen:
            pk = parent[pk]
            seen.add(pk)
        return pk

    return {pk for pk in status if status[root(pk)] in OPEN_CLASS_STATUSES}


def jobs_open_in_triage(*, experiment_id: int) -> QuerySet[Job]:
    """Jobs of the experiment that are still open in triage, as a query of pks
    (for `job_id__in=` without loading them):

    - any attempt of the job is classified in an open class (see
      open_error_class_ids): a shifter has yet to resolve or ignore it;
    - or the job failed and its latest attempt is not classified yet: triage
      has not looked at it.

    A job whose failures all sit in resolved or ignored classes is closed."""
    open_classes = open_error_class_ids(experiment_id=experiment_id)
    in_open_class = AttemptClassification.objects.filter(
        experiment_id=experiment_id, error_class_id__in=open_classes
    ).values("attempt__job_id")
    latest = Attempt.objects.filter(job_id=OuterRef("pk")).order_by("-number").values("pk")[:1]
    return (
        Job.objects.filter(stage__campaign__experiment_id=experiment_id)
        .annotate(latest_attempt_id=Subquery(latest))
        .annotate(
            latest_classified=Exists(
                AttemptClassification.objects.filter(attempt_id=OuterRef("latest_attempt_id"))
            )
        )
        .filter(Q(pk__in=in_open_class) | Q(state=Job.State.FAILED, latest_classified=False))
        .order_by()
        .values("pk")
    )


# --- attempts that need attention: lost, hung, duplicates, partial failures (issue 5) -----

OPEN = (Attempt.Status.QUEUED, Attempt.Status.RUNNING)


@dataclass
class LivenessRow:
    """An open attempt the liveness sweep calls lost or hung, with the event
    range it has not processed yet (when the job says how many it expects)."""

    attempt: Attempt
    state: str
    since: dt.datetime
    events_done: int | None
    events_expected: int | None

    @property
    def events_remaining(self) -> int | None:
        if not self.events_expected:
            return None
        return max(self.events_expected - (self.events_done or 0), 0)

    @property
    def remaining_range(self) -> str:
        """'first-last' of the unprocessed events (1-based), '' when unknown."""
        if not self.events_remaining:
            return ""
        return f"{(self.events_done or 0) + 1}-{self.events_expected}"


def _liveness_rows(qs) -> list[LivenessRow]:
    return [
        LivenessRow(
            attempt=row.attempt,
            state=row.state,
            since=row.since,
            events_done=row.attempt.events_processed,
            events_expected=row.attempt.job.events_expected,
        )
        for row in qs
    ]


def liveness_list(
    *, experiment_ids: set[int], campaign_id: int | None = None, state: str = "", limit: int = 200
) -> list[LivenessRow]:
    """Open attempts that are lost or hung (or one of them), newest verdict first."""
    from triage.models import AttemptLiveness

    qs = AttemptLiveness.objects.filter(
        campaign__experiment_id__in=experiment_ids, attempt__status__in=OPEN
    ).exclude(state=AttemptLiveness.State.OK)
    if campaign_id:
        qs = qs.filter(campaign_id=campaign_id)
    if state:
        qs = qs.filter(state=state)
    qs = qs.select_related("attempt__job__stage__campaign__experiment", "attempt__node")
    return _liveness_rows(qs.order_by("-since", "-pk")[:limit])


def attempt_liveness_row(*, attempt: Attempt) -> LivenessRow | None:
    """The liveness verdict of one attempt, when the sweep has judged it."""
    from triage.models import AttemptLiveness

    qs = AttemptLiveness.objects.filter(attempt=attempt).select_related("attempt__job")
    rows = _liveness_rows(qs)
    return rows[0] if rows else None


def liveness_job_ids(state: str, experiment_ids: set[int]) -> set[int]:
    """Jobs with an open attempt in a liveness state ("lost", "hung") — the job
    table's filter."""
    from triage.models import AttemptLiveness

    return set(
        AttemptLiveness.objects.filter(
            campaign__experiment_id__in=experiment_ids, state=state, attempt__status__in=OPEN
        ).values_list("attempt__job_id", flat=True)
    )


@dataclass
class DuplicateRow:
    """A job that completed more than once: its successful attempts, and the
    chosen one (the first good one), which alone counts for progress and outputs."""

    job: object
    attempts: list[Attempt]

    @property
    def chosen(self) -> Attempt | None:
        return next((a for a in self.attempts if a.pk == self.job.good_attempt_id), None)

    @property
    def duplicates(self) -> list[Attempt]:
        return [a for a in self.attempts if a.is_duplicate_completion]


def duplicate_completion_list(
    *, experiment_ids: set[int], campaign_id: int | None = None, limit: int = 200
) -> list[DuplicateRow]:
    from prodmon.models import Job

    jobs = Job.objects.filter(
        stage__campaign__experiment_id__in=experiment_ids, duplicate_completions__gt=0
    )
    if campaign_id:
        jobs = jobs.filter(stage__campaign_id=campaign_id)
    jobs = list(
        jobs.select_related("stage__campaign__experiment").order_by("-updated_at", "-pk")[:limit]
    )
    by_job: dict[int, list[Attempt]] = {j.pk: [] for j in jobs}
    for a in (
        Attempt.objects.filter(job_id__in=list(by_job), status=Attempt.Status.SUCCEEDED)
        .select_related("node")
        .order_by("job_id", "ended_at", "number")
    ):
        by_job[a.job_id].append(a)
    return [DuplicateRow(job=j, attempts=by_job[j.pk]) for j in jobs]


def duplicate_job_ids(experiment_ids: set[int]) -> set[int]:
    from prodmon.models import Job

    return set(
        Job.objects.filter(
            stage__campaign__experiment_id__in=experiment_ids, duplicate_completions__gt=0
        ).values_list("pk", flat=True)
    )


def partial_failure_list(
    *,
    experiment_ids: set[int],
    campaign_id: int | None = None,
    kind: str = "",
    include_resolved: bool = False,
    limit: int = 200,
):
    """Partial failures (the six skimming modes), open ones unless asked."""
    from triage.models import PartialFailure

    qs = PartialFailure.objects.filter(experiment_id__in=experiment_ids)
    if campaign_id:
        qs = qs.filter(campaign_id=campaign_id)
    if kind:
        qs = qs.filter(kind=kind)
    if not include_resolved:
        qs = qs.filter(resolved_at__isnull=True)
    return list(
        qs.select_related("campaign__experiment", "stage", "job", "attempt", "submission").order_by(
            "-detected_at", "-pk"
        )[:limit]
    )


def attempt_partial_failures(*, attempt: Attempt) -> list:
    from triage.models import PartialFailure

    return list(PartialFailure.objects.filter(attempt=attempt).order_by("kind"))


def partial_failure_job_ids(kind: str, experiment_ids: set[int]) -> set[int]:
    """Jobs with an open partial failure of a kind: the job table's filter. For
    a submission's kinds, the jobs whose inputs it says must be redone."""
    from prodmon.models import Job
    from triage.models import PartialFailure

    rows = PartialFailure.objects.filter(
        experiment_id__in=experiment_ids, kind=kind, resolved_at__isnull=True
    )
    ids = set(rows.filter(job__isnull=False).values_list("job_id", flat=True))
    for stage_id, redo in rows.filter(job__isnull=True).values_list("stage_id", "redo"):
        ids |= set(Job.objects.filter(stage_id=stage_id, key__in=redo).values_list("pk", flat=True))
    return ids


def campaign_attention_counts(*, campaign_id: int) -> dict[str, object]:
    """What the campaign page shows: lost and hung open attempts, jobs that
    completed more than once (and the extra completions), and open partial
    failures by kind."""
    from prodmon.models import Job
    from triage.models import PartialFailure

    counts: dict[str, object] = dict(campaign_liveness_counts(campaign_id=campaign_id))
    dup = Job.objects.filter(stage__campaign_id=campaign_id, duplicate_completions__gt=0).aggregate(
        jobs=Count("pk"), extra=Sum("duplicate_completions")
    )
    counts["duplicate_jobs"] = dup["jobs"] or 0
    counts["duplicate_completions"] = dup["extra"] or 0
    partial = dict.fromkeys(PartialFailure.Kind.values, 0)
    for row in (
        PartialFailure.objects.filter(campaign_id=campaign_id, resolved_at__isnull=True)
        .values("kind")
        .annotate(n=Count("pk"))
        .order_by()
    ):
        partial[row["kind"]] = row["n"]
    counts["partial"] = partial
    return counts


ATTENTION_CHOICES = [
    ("lost", "lost attempt"),
    ("hung", "hung attempt"),
    ("duplicate", "duplicate completion"),
    ("submission-failed", "whole submission failed"),
    ("submission-partial", "submission partly failed"),
    ("job-failed", "job failed totally (no outputs)"),
    ("job-partial", "job failed partly (outputs missing)"),
    ("ended-early", "job ended early (events missing)"),
    ("empty-output", "output with zero events (warning)"),
]


def attention_job_ids(value: str, experiment_ids: set[int]) -> set[int]:
    """Job ids for the job table's "needs attention" filter."""
    if value in ("lost", "hung"):
        return liveness_job_ids(value, experiment_ids)
    if value == "duplicate":
        return duplicate_job_ids(experiment_ids)
    return partial_failure_job_ids(value, experiment_ids)


def job_liveness_rows(*, job) -> list[LivenessRow]:
    """Open attempts of one job that are lost or hung (the job page)."""
    from triage.models import AttemptLiveness

    qs = (
        AttemptLiveness.objects.filter(attempt__job=job, attempt__status__in=OPEN)
        .exclude(state=AttemptLiveness.State.OK)
        .select_related("attempt__job")
        .order_by("attempt__number")
    )
    return _liveness_rows(qs)


def job_partial_failures(*, job) -> list:
    """The job's own partial failures, and those of submissions that list its
    input among what must be redone."""
    from triage.models import PartialFailure

    own = list(PartialFailure.objects.filter(job=job).select_related("attempt"))
    subs = [
        p
        for p in PartialFailure.objects.filter(
            stage_id=job.stage_id, job__isnull=True, resolved_at__isnull=True
        ).select_related("submission")
        if job.key in (p.redo or [])
    ]
    return sorted(own + subs, key=lambda p: (p.resolved_at is not None, -p.detected_at.timestamp()))
