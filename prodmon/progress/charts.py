"""Plotly figures as plain dicts (data + layout), drawn in the page by
static/progress/charts.js with the plotly.js that /progress/plotly.min.js
serves from the installed plotly package (no CDN).

Labels are escaped: plotly reads a few HTML-like tags in text, and site and
stage names come from outside.
"""

from __future__ import annotations

import datetime as dt
from html import escape

from prodmon.progress.estimates import CampaignEstimate
from prodmon.progress.reports import EfficiencyReport
from prodmon.progress.selectors import Throughput
from prodmon.selectors import StageProgress

PALETTE = ["#1a73e8", "#e8710a", "#12b5cb", "#9334e6", "#1e8e3e", "#d01884", "#7cb342", "#5f6368"]
FAILED = "#c5221f"
FONT = {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12}


def _label(text: str) -> str:
    return escape(str(text), quote=False)


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _layout(**extra) -> dict:
    layout = {
        "font": FONT,
        "margin": {"l": 56, "r": 16, "t": 12, "b": 40},
        "height": 300,
        "paper_bgcolor": "#fff",
        "plot_bgcolor": "#fff",
        "legend": {"orientation": "h", "y": -0.2},
        "hovermode": "x unified",
    }
    layout.update(extra)
    return layout


def color_of(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def progress_chart(
    *,
    progress: list[StageProgress],
    series: dict[int, list[tuple[dt.datetime, float]]],
    estimate: CampaignEstimate | None,
) -> dict:
    """Percent complete over time per stage, with each stage's projection to
    its target (dotted) and the ETA band (a thick faint bar at the target)."""
    data = []
    for i, p in enumerate(progress):
        points = series.get(p.stage.pk, [])
        color = color_of(i)
        name = _label(p.stage.name)
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": name,
                "x": [_iso(t) for t, _ in points],
                "y": [round(v, 2) for _, v in points],
                "line": {"color": color, "width": 2, "shape": "hv"},
                "meta": {"stage": p.stage.pk, "kind": "progress"},
                "hovertemplate": "%{y:.1f}%",
            }
        )
        eta = estimate.stages.get(p.stage.pk) if estimate else None
        if eta is not None and eta.is_estimated and eta.at is not None and points:
            target = float(p.stage.completion_pct)
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines+markers",
                    "name": f"{name} projected",
                    "x": [_iso(points[-1][0]), _iso(eta.at)],
                    "y": [round(points[-1][1], 2), target],
                    "line": {"color": color, "width": 2, "dash": "dot"},
                    "marker": {"size": [0, 8], "color": color},
                    "showlegend": False,
                    "meta": {"stage": p.stage.pk, "kind": "projection"},
                    "hovertemplate": "ETA %{x}<extra></extra>",
                }
            )
            if eta.low is not None:
                high = eta.high or eta.at
                data.append(
                    {
                        "type": "scatter",
                        "mode": "lines",
                        "name": f"{name} ETA band",
                        "x": [_iso(eta.low), _iso(high)],
                        "y": [target, target],
                        "line": {"color": color, "width": 10},
                        "opacity": 0.25,
                        "showlegend": False,
                        "meta": {"stage": p.stage.pk, "kind": "band"},
                        "hoverinfo": "skip",
                    }
                )
    return {
        "data": data,
        "layout": _layout(
            yaxis={"title": {"text": "% of expected jobs succeeded"}, "range": [0, 105]},
            xaxis={"type": "date", "nticks": 8},
        ),
    }


def throughput_chart(*, progress: list[StageProgress], throughput: Throughput) -> dict:
    """Good attempts per hour (or day) stacked by stage, failed ones in red."""
    data = []
    failed: dict[dt.datetime, int] = {}
    for i, p in enumerate(progress):
        rows = throughput.rows.get(p.stage.pk, {})
        if not rows:
            continue
        buckets = sorted(rows)
        data.append(
            {
                "type": "bar",
                "name": _label(p.stage.name),
                "x": [_iso(b) for b in buckets],
                "y": [rows[b][0] for b in buckets],
                "marker": {"color": color_of(i)},
                "meta": {"stage": p.stage.pk, "kind": "good"},
            }
        )
        for b in buckets:
            failed[b] = failed.get(b, 0) + rows[b][1]
    if failed:
        buckets = sorted(failed)
        data.append(
            {
                "type": "bar",
                "name": "failed (all stages)",
                "x": [_iso(b) for b in buckets],
                "y": [failed[b] for b in buckets],
                "marker": {"color": FAILED, "opacity": 0.8},
                "meta": {"kind": "failed"},
            }
        )
    return {
        "data": data,
        "layout": _layout(
            barmode="stack",
            yaxis={"title": {"text": f"attempts ended per {throughput.bucket}"}},
            xaxis={"type": "date", "nticks": 8},
        ),
    }


def report_charts(report: EfficiencyReport) -> dict[str, dict]:
    rows = report.rows
    labels = [_label(r.label) for r in rows]
    charts = {}
    if rows and report.by == "week":
        x = [r.key for r in rows]
        charts["efficiency"] = {
            "data": [
                {
                    "type": "scatter",
                    "mode": "lines+markers",
                    "name": "CPU efficiency",
                    "x": x,
                    "y": [
                        None if r.cpu_efficiency is None else round(100 * r.cpu_efficiency, 2)
                        for r in rows
                    ],
                    "line": {"color": PALETTE[0]},
                },
                {
                    "type": "scatter",
                    "mode": "lines+markers",
                    "name": "success rate",
                    "x": x,
                    "y": [
                        None if r.success_rate is None else round(100 * r.success_rate, 2)
                        for r in rows
                    ],
                    "line": {"color": PALETTE[4]},
                },
            ],
            "layout": _layout(yaxis={"title": {"text": "%"}, "range": [0, 105]}),
        }
    elif rows:
        charts["efficiency"] = {
            "data": [
                {
                    "type": "bar",
                    "name": "CPU efficiency",
                    "x": labels,
                    "y": [
                        None if r.cpu_efficiency is None else round(100 * r.cpu_efficiency, 2)
                        for r in rows
                    ],
                    "marker": {"color": PALETTE[0]},
                },
                {
                    "type": "bar",
                    "name": "success rate",
                    "x": labels,
                    "y": [
                        None if r.success_rate is None else round(100 * r.success_rate, 2)
                        for r in rows
                    ],
                    "marker": {"color": PALETTE[4]},
                },
            ],
            "layout": _layout(barmode="group", yaxis={"title": {"text": "%"}, "range": [0, 105]}),
        }
    if rows:
        charts["wall"] = {
            "data": [
                {
                    "type": "bar",
                    "name": "useful wall hours",
                    "x": [r.key if report.by == "week" else _label(r.label) for r in rows],
                    "y": [round(r.wall_hours - r.wasted_hours, 2) for r in rows],
                    "marker": {"color": PALETTE[4]},
                },
                {
                    "type": "bar",
                    "name": "wasted wall hours",
                    "x": [r.key if report.by == "week" else _label(r.label) for r in rows],
                    "y": [round(r.wasted_hours, 2) for r in rows],
                    "marker": {"color": FAILED},
                },
            ],
            "layout": _layout(barmode="stack", yaxis={"title": {"text": "wall hours"}}),
        }
    errors = report.errors[:15]
    if errors:
        charts["errors"] = {
            "data": [
                {
                    "type": "bar",
                    "orientation": "h",
                    "name": "wasted wall hours",
                    "y": [_label(e.label) for e in reversed(errors)],
                    "x": [round(e.wasted_hours, 2) for e in reversed(errors)],
                    "marker": {"color": FAILED},
                    "hovertemplate": "%{x:.1f} h<extra></extra>",
                }
            ],
            "layout": _layout(
                height=max(180, 28 * len(errors) + 60),
                margin={"l": 200, "r": 16, "t": 12, "b": 40},
                xaxis={"title": {"text": "wasted wall hours"}},
                hovermode="closest",
                showlegend=False,
            ),
        }
    return charts
