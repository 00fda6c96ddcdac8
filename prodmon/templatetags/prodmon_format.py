"""Human-friendly formatting for the portal: durations, sizes, UTC times, badges.

Every value here may be missing (a running attempt has no exit code yet), so
each filter renders None as an em dash rather than "None".
"""

import datetime as dt
import signal as signal_module

from django import template
from django.utils import timezone
from django.utils.html import format_html

register = template.Library()

MISSING = "—"
_IEC_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]


@register.filter
def duration(seconds) -> str:
    """42s, 12m 05s, 1h 02m, 3d 04h."""
    if seconds is None:
        return MISSING
    total = int(round(float(seconds)))
    if total < 0:
        return MISSING
    days, rem = divmod(total, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


@register.filter
def filesize(num_bytes) -> str:
    """Binary units: 512 B, 1.2 KiB, 3.4 GiB, 120 GiB."""
    if num_bytes is None:
        return MISSING
    value = float(num_bytes)
    for unit in _IEC_UNITS:
        if abs(value) < 1024 or unit == _IEC_UNITS[-1]:
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.1f} {unit}" if abs(value) < 100 else f"{value:.0f} {unit}"
        value /= 1024
    return MISSING  # unreachable: the last unit always returns


@register.filter
def thousands(number) -> str:
    if number is None:
        return MISSING
    return f"{int(number):,}"


@register.filter
def fraction_pct(fraction) -> str:
    """A 0..1 fraction (CPU efficiency) as a percentage: 0.873 -> 87%."""
    if fraction is None:
        return MISSING
    return f"{100 * float(fraction):.0f}%"


@register.filter
def utc(value: dt.datetime | None) -> str:
    if value is None:
        return MISSING
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@register.filter
def ago(value: dt.datetime | None) -> str:
    """Compact relative time: just now, 42s ago, 5m ago, 3h 12m ago, 4d ago."""
    if value is None:
        return MISSING
    delta = int((timezone.now() - value).total_seconds())
    suffix = "ago"
    if delta < 0:
        delta, suffix = -delta, "from now"
    if delta < 5:
        return "just now"
    if delta < 60:
        text = f"{delta}s"
    elif delta < 3600:
        text = f"{delta // 60}m"
    elif delta < 86400:
        text = f"{delta // 3600}h {delta % 3600 // 60:02d}m"
    else:
        text = f"{delta // 86400}d"
    return f"{text} {suffix}"


@register.simple_tag
def timestamp(value: dt.datetime | None):
    """A UTC time with its age; the ISO value rides along for tooltips and scripts."""
    if value is None:
        return MISSING
    return format_html(
        '<time datetime="{}" title="{}"><span class="at">{}</span> '
        '<span class="ago">{}</span></time>',
        value.isoformat(),
        utc(value),
        value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        ago(value),
    )


def signal_name(number: int) -> str:
    try:
        return signal_module.Signals(number).name
    except ValueError:
        return f"signal {number}"


@register.simple_tag
def exit_status(exit_code: int | None, signal: int | None):
    """'exit 0' in green, 'exit 65' or 'SIGKILL (9)' in red, a dash while unknown."""
    if signal is not None:
        return format_html('<span class="exit bad">{} ({})</span>', signal_name(signal), signal)
    if exit_code is None:
        return MISSING
    cls = "ok" if exit_code == 0 else "bad"
    return format_html('<span class="exit {}">exit {}</span>', cls, exit_code)


@register.simple_tag
def badge(state: str):
    return format_html('<span class="badge st-{}">{}</span>', state, state)
