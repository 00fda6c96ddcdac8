"""Template helpers for triage pages. Log text is untrusted: every piece of it
goes through format_html/escape; nothing here marks raw log text safe."""

from django import template
from django.utils.html import format_html

from triage.kb import Category

register = template.Library()

_CATEGORY_LABELS = dict(Category.CHOICES)


@register.simple_tag
def highlighted(line: str, start, end):
    """The line with [start, end) in <mark>: split first, then escape each part."""
    line = line or ""
    try:
        start, end = int(start), int(end)
    except (TypeError, ValueError):
        return format_html("{}", line)
    if not (0 <= start <= end <= len(line)):
        return format_html("{}", line)
    return format_html('{}<mark class="hit">{}</mark>{}', line[:start], line[start:end], line[end:])


@register.filter
def category_label(value: str) -> str:
    return _CATEGORY_LABELS.get(value, value)


@register.filter
def hours(seconds) -> str:
    if not seconds:
        return "0 h"
    value = float(seconds) / 3600
    return f"{value:,.1f} h" if value < 100 else f"{value:,.0f} h"


@register.filter
def get_item(mapping, key):
    return mapping.get(key) if mapping else None


# --- liveness, duplicates and partial failures on prodmon's pages (issue 5) ---------


@register.inclusion_tag("triage/health/_campaign_attention.html")
def campaign_attention(campaign):
    """Counts of lost, hung, duplicate and partial on the campaign page, each
    linking to the job table filtered to it."""
    from triage import selectors

    counts = selectors.campaign_attention_counts(campaign_id=campaign.pk)
    labels = dict(selectors.ATTENTION_CHOICES)
    partial = [(kind, labels[kind], n) for kind, n in counts["partial"].items()]
    return {"campaign": campaign, "counts": counts, "partial": partial}


@register.inclusion_tag("triage/health/_attempt_attention.html")
def attempt_attention(attempt):
    """The attempt's liveness verdict (with the events it leaves undone) and its
    partial failures, on the attempt page."""
    from triage import selectors

    return {
        "attempt": attempt,
        "liveness": selectors.attempt_liveness_row(attempt=attempt),
        "partials": selectors.attempt_partial_failures(attempt=attempt),
    }


@register.inclusion_tag("triage/health/_job_attention.html")
def job_attention(job):
    """Lost or hung attempts of the job (with the events they leave undone) and
    its partial failures, on the job page."""
    from triage import selectors

    return {
        "job": job,
        "liveness": selectors.job_liveness_rows(job=job),
        "partials": selectors.job_partial_failures(job=job),
    }
