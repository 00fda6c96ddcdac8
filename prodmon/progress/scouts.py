"""Resource advice from scout jobs.

The first N good attempts of a stage (by end time; N = PRODMON_SCOUT_JOBS)
are its scouts. Their p50 and p95 of wall time, peak RSS and disk give the
suggested requests for the rest: p95 times a margin (PRODMON_SCOUT_MARGIN,
1.2), rounded up (memory to 128 MiB, wall time to 15 minutes, disk to 1 GiB).
Failed attempts that were killed for memory (an exit code that means memory,
or SIGKILL with the peak RSS near the memory request) are listed with the
suggestion; their RSS is a floor (they died before their peak), so the
suggestion is never below their RSS times the margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from django.db.models import Q

from prodmon.models import Attempt, Stage
from prodmon.progress.conf import setting
from prodmon.progress.eta import percentile

MIB = 1024**2
GIB = 1024**3
MEMORY_STEP_MB = 128
WALL_STEP_S = 15 * 60


def _round_up(value: float, step: float) -> int:
    return int(math.ceil(value / step) * step) if value > 0 else 0


@dataclass
class Quantiles:
    p50: float | None = None
    p95: float | None = None
    samples: int = 0

    @classmethod
    def of(cls, values: list[float]) -> Quantiles:
        values = sorted(v for v in values if v is not None)
        if not values:
            return cls()
        return cls(p50=percentile(values, 0.5), p95=percentile(values, 0.95), samples=len(values))


@dataclass
class MemoryKill:
    attempt_uid: str
    job_key: str
    number: int
    exit_code: int | None
    signal: int | None
    peak_rss_bytes: int | None
    request_memory_mb: int | None
    why: str


@dataclass
class ResourceSuggestion:
    stage_id: int
    scouts: int
    needed: int  # scouts wanted before advising
    wall: Quantiles = field(default_factory=Quantiles)
    rss: Quantiles = field(default_factory=Quantiles)
    disk: Quantiles = field(default_factory=Quantiles)
    margin: float = 1.2
    memory_mb: int | None = None
    walltime_s: int | None = None
    disk_bytes: int | None = None
    request_memory_mb: int | None = None  # the stage's current request
    request_walltime_s: int | None = None
    memory_kills: list[MemoryKill] = field(default_factory=list)

    @property
    def enough(self) -> bool:
        return self.scouts >= self.needed

    def as_dict(self) -> dict:
        return {
            "stage": self.stage_id,
            "scouts": self.scouts,
            "enough_scouts": self.enough,
            "wall_s": {"p50": self.wall.p50, "p95": self.wall.p95},
            "peak_rss_bytes": {"p50": self.rss.p50, "p95": self.rss.p95},
            "disk_bytes": {"p50": self.disk.p50, "p95": self.disk.p95},
            "suggested": {
                "memory_mb": self.memory_mb,
                "walltime_s": self.walltime_s,
                "disk_bytes": self.disk_bytes,
            },
            "request": {
                "memory_mb": self.request_memory_mb,
                "walltime_s": self.request_walltime_s,
            },
            "memory_kills": len(self.memory_kills),
        }


def memory_kill_reason(
    *,
    exit_code: int | None,
    signal: int | None,
    peak_rss_bytes: int | None,
    request_memory_mb: int | None,
) -> str | None:
    """Why a failed attempt counts as killed for memory, or None."""
    codes = {int(c) for c in setting("PRODMON_MEMORY_EXIT_CODES")}
    if exit_code is not None and exit_code in codes:
        return f"exit code {exit_code} means memory"
    if signal == 9 and peak_rss_bytes and request_memory_mb:
        fraction = float(setting("PRODMON_MEMORY_KILL_RSS_FRACTION"))
        if peak_rss_bytes >= fraction * request_memory_mb * MIB:
            return (
                f"SIGKILL at {peak_rss_bytes / MIB:,.0f} MiB RSS, "
                f"≥ {fraction:.0%} of the {request_memory_mb:,} MB request"
            )
    return None


def stage_resource_suggestion(stage_id: int) -> ResourceSuggestion:
    """Scout statistics and suggested requests for a stage."""
    stage = Stage.objects.get(pk=stage_id)
    n = int(setting("PRODMON_SCOUT_JOBS"))
    margin = float(setting("PRODMON_SCOUT_MARGIN"))
    scouts = list(
        Attempt.objects.filter(
            job__stage_id=stage_id,
            status=Attempt.Status.SUCCEEDED,
            is_duplicate_completion=False,
            ended_at__isnull=False,
        )
        .order_by("ended_at", "pk")
        .values_list("wall_s", "peak_rss_bytes", "disk_bytes")[:n]
    )
    stage_request = getattr(stage, "request_memory_mb", None)
    result = ResourceSuggestion(
        stage_id=stage_id,
        scouts=len(scouts),
        needed=min(int(setting("PRODMON_SCOUT_MIN_JOBS")), n),
        wall=Quantiles.of([w for w, _, _ in scouts]),
        rss=Quantiles.of([r for _, r, _ in scouts]),
        disk=Quantiles.of([d for _, _, d in scouts]),
        margin=margin,
        request_memory_mb=stage_request,
        request_walltime_s=getattr(stage, "request_walltime_s", None),
    )

    failed = Attempt.objects.filter(job__stage_id=stage_id, status=Attempt.Status.FAILED).filter(
        Q(exit_code__in=list(setting("PRODMON_MEMORY_EXIT_CODES"))) | Q(signal=9)
    )
    has_request = hasattr(Attempt, "request_memory_mb")
    fields = ["uid", "job__key", "number", "exit_code", "signal", "peak_rss_bytes"]
    if has_request:
        fields.append("request_memory_mb")
    killed_rss = []
    for row in failed.order_by("-ended_at").values_list(*fields)[:500]:
        uid, key, number, exit_code, signal, rss = row[:6]
        request = (row[6] if has_request else None) or stage_request
        why = memory_kill_reason(
            exit_code=exit_code, signal=signal, peak_rss_bytes=rss, request_memory_mb=request
        )
        if why is None:
            continue
        result.memory_kills.append(
            MemoryKill(
                attempt_uid=str(uid),
                job_key=key,
                number=number,
                exit_code=exit_code,
                signal=signal,
                peak_rss_bytes=rss,
                request_memory_mb=request,
                why=why,
            )
        )
        if rss:
            killed_rss.append(rss)

    if result.enough:
        rss_floor = max([result.rss.p95 or 0.0, *killed_rss])
        if rss_floor:
            result.memory_mb = _round_up(rss_floor * margin / MIB, MEMORY_STEP_MB)
        if result.wall.p95:
            result.walltime_s = _round_up(result.wall.p95 * margin, WALL_STEP_S)
        if result.disk.p95:
            result.disk_bytes = _round_up(result.disk.p95 * margin, GIB)
    return result


def scout_resource_suggestion(stage_id: int) -> dict | None:
    """The action layer's hook (prodmon.actions.hooks): suggested memory and
    wall-time requests, or None before there are enough scouts."""
    suggestion = stage_resource_suggestion(stage_id)
    if not suggestion.enough:
        return None
    out = {}
    if suggestion.memory_mb:
        out["memory_mb"] = suggestion.memory_mb
    if suggestion.walltime_s:
        out["walltime_s"] = suggestion.walltime_s
    return out or None
