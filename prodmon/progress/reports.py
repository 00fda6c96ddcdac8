"""Efficiency reports for production managers.

Over the ended attempts of a time range, grouped by campaign, stage, site or
week (the week an attempt ended in, Monday to Sunday, UTC):

- CPU efficiency = sum(cpu) / sum(wall x cores), over the attempts that
  report both (a ratio of sums, so long jobs weigh more, as they cost more);
- success rate = good attempts / ended attempts (a duplicate completion is
  not good: its result is thrown away);
- wall time wasted = wall time of failed attempts and duplicate completions,
  also per error class;
- peak memory (mean and max) and output sizes (total and per good attempt).

Error classes are pluggable (`ErrorGrouping`): the triage app's
classification when it is installed and has one, otherwise the exit code or
signal. PRODMON_REPORT_ERROR_GROUPING forces one ("exit_code", "triage").
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import signal as signal_module
from dataclasses import asdict, dataclass, field
from typing import Protocol

from django.db.models import Avg, Count, F, FloatField, Max, Q, QuerySet, Sum
from django.db.models.functions import Cast, TruncWeek
from django.urls import reverse
from django.utils import timezone

from prodmon.models import Attempt, Campaign, Stage
from prodmon.progress.conf import setting

GROUPINGS = ("campaign", "stage", "site", "week")
DEFAULT_DAYS = 28
HOUR = 3600.0


@dataclass(frozen=True)
class ReportFilters:
    experiment_ids: frozenset[int]
    since: dt.datetime
    until: dt.datetime
    campaign_id: int | None = None
    stage_id: int | None = None
    site: str = ""

    def as_dict(self) -> dict:
        return {
            "experiments": sorted(self.experiment_ids),
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "campaign": self.campaign_id,
            "stage": self.stage_id,
            "site": self.site or None,
        }


def default_range(days: int = DEFAULT_DAYS) -> tuple[dt.datetime, dt.datetime]:
    """The last `days` days up to the end of today (UTC)."""
    today = timezone.now().astimezone(dt.UTC).date()
    until = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return until - dt.timedelta(days=days), until


def week_range(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """Monday 00:00 to the next Monday 00:00 (UTC) of the week containing `day`."""
    monday = day - dt.timedelta(days=day.weekday())
    start = dt.datetime.combine(monday, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=7)


def ended_attempts(filters: ReportFilters) -> QuerySet[Attempt]:
    qs = Attempt.objects.filter(
        job__stage__campaign__experiment_id__in=filters.experiment_ids,
        status__in=Attempt.ENDED,
        ended_at__gte=filters.since,
        ended_at__lt=filters.until,
    )
    if filters.campaign_id:
        qs = qs.filter(job__stage__campaign_id=filters.campaign_id)
    if filters.stage_id:
        qs = qs.filter(job__stage_id=filters.stage_id)
    if filters.site:
        qs = qs.filter(node__site=filters.site)
    return qs


GOOD = Q(status=Attempt.Status.SUCCEEDED, is_duplicate_completion=False)
WASTED = Q(status=Attempt.Status.FAILED) | Q(is_duplicate_completion=True)
HAS_CPU = Q(cpu_s__isnull=False, wall_s__isnull=False)


def _aggregates() -> dict:
    core_wall = Cast(F("wall_s"), FloatField()) * F("cores")
    return {
        "attempts": Count("id"),
        "good": Count("id", filter=GOOD),
        "failed": Count("id", filter=Q(status=Attempt.Status.FAILED)),
        "duplicates": Count("id", filter=Q(is_duplicate_completion=True)),
        "sum_wall": Sum("wall_s"),
        "sum_cpu": Sum("cpu_s", filter=HAS_CPU),
        "sum_core_wall": Sum(core_wall, filter=HAS_CPU),
        "sum_wasted": Sum("wall_s", filter=WASTED),
        "rss_mean": Avg("peak_rss_bytes"),
        "rss_max": Max("peak_rss_bytes"),
        "output_bytes": Sum("output_bytes", filter=GOOD),
    }


@dataclass
class EfficiencyRow:
    key: str
    label: str
    url: str = ""
    attempts: int = 0
    good: int = 0
    failed: int = 0
    duplicates: int = 0
    wall_hours: float = 0.0
    cpu_hours: float = 0.0
    cpu_efficiency: float | None = None
    success_rate: float | None = None
    wasted_hours: float = 0.0
    rss_mean_bytes: float | None = None
    rss_max_bytes: int | None = None
    output_bytes: int = 0
    output_per_good_bytes: float | None = None

    @classmethod
    def from_aggregate(cls, key: str, label: str, url: str, row: dict) -> EfficiencyRow:
        attempts = row["attempts"] or 0
        good = row["good"] or 0
        core_wall = row["sum_core_wall"] or 0.0
        output = int(row["output_bytes"] or 0)
        return cls(
            key=key,
            label=label,
            url=url,
            attempts=attempts,
            good=good,
            failed=row["failed"] or 0,
            duplicates=row["duplicates"] or 0,
            wall_hours=(row["sum_wall"] or 0.0) / HOUR,
            cpu_hours=(row["sum_cpu"] or 0.0) / HOUR,
            cpu_efficiency=(row["sum_cpu"] or 0.0) / core_wall if core_wall else None,
            success_rate=good / attempts if attempts else None,
            wasted_hours=(row["sum_wasted"] or 0.0) / HOUR,
            rss_mean_bytes=row["rss_mean"],
            rss_max_bytes=row["rss_max"],
            output_bytes=output,
            output_per_good_bytes=output / good if good else None,
        )


@dataclass
class ErrorClassRow:
    label: str
    attempts: int
    wasted_hours: float
    key: str = ""


@dataclass
class EfficiencyReport:
    filters: ReportFilters
    by: str
    rows: list[EfficiencyRow]
    total: EfficiencyRow
    errors: list[ErrorClassRow] = field(default_factory=list)
    error_grouping: str = ""

    def as_dict(self) -> dict:
        return {
            "filters": self.filters.as_dict(),
            "by": self.by,
            "rows": [asdict(r) for r in self.rows],
            "total": asdict(self.total),
            "wasted_by_error_class": [asdict(e) for e in self.errors],
            "error_grouping": self.error_grouping,
        }


def _job_list_url(**params) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items() if v not in (None, ""))
    return f"{reverse('job-list')}?{query}"


def _grouped(qs: QuerySet[Attempt], by: str, filters: ReportFilters) -> list[EfficiencyRow]:
    agg = _aggregates()
    rows: list[EfficiencyRow] = []
    if by == "campaign":
        data = qs.values("job__stage__campaign_id").annotate(**agg).order_by()
        names = {
            c.pk: f"{c.experiment.name}/{c.name}"
            for c in Campaign.objects.select_related("experiment").filter(
                pk__in=[d["job__stage__campaign_id"] for d in data]
            )
        }
        for d in data:
            cid = d["job__stage__campaign_id"]
            rows.append(
                EfficiencyRow.from_aggregate(
                    str(cid), names.get(cid, str(cid)), reverse("campaign-detail", args=[cid]), d
                )
            )
    elif by == "stage":
        data = qs.values("job__stage_id").annotate(**agg).order_by()
        names = {
            s.pk: f"{s.campaign.name}/{s.name}"
            for s in Stage.objects.select_related("campaign").filter(
                pk__in=[d["job__stage_id"] for d in data]
            )
        }
        for d in data:
            sid = d["job__stage_id"]
            rows.append(
                EfficiencyRow.from_aggregate(
                    str(sid), names.get(sid, str(sid)), _job_list_url(stage=sid), d
                )
            )
    elif by == "site":
        data = qs.values("node__site").annotate(**agg).order_by()
        for d in data:
            site = d["node__site"] or ""
            url = _job_list_url(site=site, campaign=filters.campaign_id) if site else ""
            rows.append(EfficiencyRow.from_aggregate(site, site or "(no site)", url, d))
    elif by == "week":
        data = qs.annotate(week=TruncWeek("ended_at")).values("week").annotate(**agg).order_by()
        for d in data:
            week = d["week"]
            day = week.date() if isinstance(week, dt.datetime) else week
            rows.append(EfficiencyRow.from_aggregate(day.isoformat(), f"week of {day}", "", d))
        rows.sort(key=lambda r: r.key)
        return rows
    else:
        raise ValueError(f"unknown grouping {by!r}; one of {', '.join(GROUPINGS)}")
    rows.sort(key=lambda r: (-r.wall_hours, r.label))
    return rows


# --- error classes -----------------------------------------------------------------------


class ErrorGrouping(Protocol):
    """How failed attempts are grouped into error classes for the reports."""

    name: str

    def wasted(self, failed: QuerySet[Attempt]) -> list[ErrorClassRow]: ...


def exit_label(exit_code: int | None, signal: int | None) -> str:
    if signal is not None:
        try:
            return f"{signal_module.Signals(signal).name} ({signal})"
        except ValueError:
            return f"signal {signal}"
    if exit_code is None:
        return "no exit code"
    return f"exit {exit_code}"


class ExitCodeGrouping:
    name = "exit code or signal"

    def wasted(self, failed: QuerySet[Attempt]) -> list[ErrorClassRow]:
        rows = failed.values("exit_code", "signal").annotate(n=Count("id"), wall=Sum("wall_s"))
        return _sorted(
            ErrorClassRow(
                label=exit_label(r["exit_code"], r["signal"]),
                attempts=r["n"],
                wasted_hours=(r["wall"] or 0.0) / HOUR,
                key=f"exit:{r['exit_code']}:{r['signal']}",
            )
            for r in rows.order_by()
        )


class TriageGrouping:
    """The triage app's classification (AttemptClassification.error_class);
    unclassified failures fall back to their exit code or signal."""

    name = "error class (triage)"

    def wasted(self, failed: QuerySet[Attempt]) -> list[ErrorClassRow]:
        classified = failed.filter(classification__isnull=False)
        rows = [
            ErrorClassRow(
                label=r["classification__error_class__title"] or "unnamed class",
                attempts=r["n"],
                wasted_hours=(r["wall"] or 0.0) / HOUR,
                key=f"class:{r['classification__error_class_id']}",
            )
            for r in classified.values(
                "classification__error_class_id", "classification__error_class__title"
            )
            .annotate(n=Count("id"), wall=Sum("wall_s"))
            .order_by()
        ]
        rest = ExitCodeGrouping().wasted(failed.filter(classification__isnull=True))
        for r in rest:
            r.label = f"unclassified: {r.label}"
        return _sorted([*rows, *rest])


def _sorted(rows) -> list[ErrorClassRow]:
    return sorted(rows, key=lambda r: (-r.wasted_hours, -r.attempts, r.label))


def _triage_available() -> bool:
    try:
        field_ = Attempt._meta.get_field("classification")
    except Exception:  # noqa: BLE001 - FieldDoesNotExist: triage has no classification yet
        return False
    return field_.related_model._meta.app_label == "triage"


def error_grouping() -> ErrorGrouping:
    choice = setting("PRODMON_REPORT_ERROR_GROUPING")
    if choice == "exit_code":
        return ExitCodeGrouping()
    if choice == "triage" or (choice == "auto" and _triage_available()):
        return TriageGrouping()
    return ExitCodeGrouping()


# --- the report --------------------------------------------------------------------------


def efficiency_report(*, filters: ReportFilters, by: str = "campaign") -> EfficiencyReport:
    qs = ended_attempts(filters)
    rows = _grouped(qs, by, filters)
    total = EfficiencyRow.from_aggregate("total", "total", "", qs.aggregate(**_aggregates()))
    grouping = error_grouping()
    errors = grouping.wasted(qs.filter(status=Attempt.Status.FAILED))
    duplicates = qs.filter(is_duplicate_completion=True).aggregate(n=Count("id"), w=Sum("wall_s"))
    if duplicates["n"]:
        errors = _sorted(
            [
                *errors,
                ErrorClassRow(
                    label="duplicate completion",
                    attempts=duplicates["n"],
                    wasted_hours=(duplicates["w"] or 0.0) / HOUR,
                    key="duplicate",
                ),
            ]
        )
    return EfficiencyReport(
        filters=filters,
        by=by,
        rows=rows,
        total=total,
        errors=errors,
        error_grouping=grouping.name,
    )


CSV_COLUMNS = [
    ("group", "label"),
    ("attempts", "attempts"),
    ("good", "good"),
    ("failed", "failed"),
    ("duplicates", "duplicates"),
    ("success_rate", "success_rate"),
    ("cpu_efficiency", "cpu_efficiency"),
    ("wall_hours", "wall_hours"),
    ("cpu_hours", "cpu_hours"),
    ("wasted_wall_hours", "wasted_hours"),
    ("peak_rss_mean_bytes", "rss_mean_bytes"),
    ("peak_rss_max_bytes", "rss_max_bytes"),
    ("output_bytes", "output_bytes"),
    ("output_per_good_attempt_bytes", "output_per_good_bytes"),
]


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def report_csv(report: EfficiencyReport) -> str:
    """The grouped rows, a total row, then the wasted time per error class."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([report.by] + [name for name, _ in CSV_COLUMNS[1:]])
    for row in [*report.rows, report.total]:
        writer.writerow([_fmt(getattr(row, attr)) for _, attr in CSV_COLUMNS])
    return buf.getvalue()


def errors_csv(report: EfficiencyReport) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["error_class", "failed_attempts", "wasted_wall_hours"])
    for e in report.errors:
        writer.writerow([e.label, e.attempts, _fmt(e.wasted_hours)])
    return buf.getvalue()
