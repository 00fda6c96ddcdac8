"""Plotly figures for the triage pages, as JSON-ready dicts.

The pages load plotly.js once from /errors/plotly.min.js (served from the
installed plotly package, no CDN) and draw these with Plotly.newPlot. Labels
taken from logs are escaped: plotly reads a few HTML-like tags in text.
"""

from __future__ import annotations

import functools
import html
import json

import plotly
import plotly.graph_objects as go

_FONT = {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12}
_MARGIN = {"l": 40, "r": 10, "t": 10, "b": 40}


@functools.cache
def plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def plotly_version() -> str:
    return plotly.__version__


def _to_dict(fig: go.Figure) -> dict:
    return json.loads(fig.to_json())


def _label(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(text, quote=False)


def wall_time_chart(rows, limit: int = 12) -> dict | None:
    """Horizontal bars: wall hours lost per class, biggest on top."""
    rows = [r for r in rows if r.wall_s > 0][:limit]
    if not rows:
        return None
    rows = list(reversed(rows))
    fig = go.Figure(
        go.Bar(
            x=[round(r.wall_s / 3600, 2) for r in rows],
            y=[f"#{r.error_class.pk} {_label(r.error_class.title)}" for r in rows],
            orientation="h",
            marker_color="#c5221f",
            hovertemplate="%{y}<br>%{x} wall hours lost<extra></extra>",
        )
    )
    fig.update_layout(
        height=max(160, 26 * len(rows) + 50),
        margin={**_MARGIN, "l": 10},
        font=_FONT,
        xaxis_title="wall hours lost",
        yaxis={"automargin": True},
        plot_bgcolor="#fff",
        paper_bgcolor="#fff",
    )
    return _to_dict(fig)


def trend_chart(trend, *, hourly: bool) -> dict:
    peak = max(trend.counts, default=0)
    fig = go.Figure(
        go.Bar(
            x=[t.isoformat() for t in trend.labels],
            y=trend.counts,
            marker_color="#1f5fbf",
            hovertemplate=("%{x|%H:00 UTC}" if hourly else "%{x|%Y-%m-%d}")
            + "<br>%{y} failures<extra></extra>",
        )
    )
    fig.update_layout(
        height=200,
        margin=_MARGIN,
        font=_FONT,
        bargap=0.15,
        xaxis={"type": "date", "tickformat": "%H:%M" if hourly else "%b %d"},
        # Whole numbers only: small counts would otherwise get ticks at 0.5.
        yaxis={"rangemode": "tozero", "tickformat": "d", **({"dtick": 1} if peak <= 5 else {})},
        plot_bgcolor="#fff",
        paper_bgcolor="#fff",
    )
    return _to_dict(fig)
