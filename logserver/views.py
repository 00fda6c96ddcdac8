"""Log server pages: the log viewer, its JSON line feed, the download, and
log search. Scoped like the portal: anything outside the user's experiments
is a 404."""

import re
from pathlib import Path

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET

from logserver import fulllog, selectors
from prodmon import selectors as production
from prodmon.models import Attempt

REPORTER_PATH = Path(__file__).with_name("prodmon_report.py")
# How many lines before a linked line the viewer opens with, for context.
CONTEXT_LINES = 100
SEARCH_PAGE = 50
IN_LOG_HITS = 200


@require_GET
def reporter_download(request):
    """The worker-node reporter, one stdlib-only file, at a stable URL.

    Public on purpose: it holds no secret, and worker nodes fetch it with curl."""
    return FileResponse(
        REPORTER_PATH.open("rb"),
        as_attachment=True,
        filename="prodmon-report.py",
        content_type="text/x-python",
    )


def _attempt_or_404(request, uid) -> Attempt:
    attempt = production.attempt_get(
        uid=uid, experiment_ids=production.experiment_ids_for_user(user=request.user)
    )
    if attempt is None:
        raise Http404("no such attempt in your experiments")
    return attempt


def _int(value, default=None, lo=None, hi=None):
    try:
        number = int(value)
    except (TypeError, ValueError):
        return default
    if lo is not None:
        number = max(lo, number)
    if hi is not None:
        number = min(hi, number)
    return number


def log_download_response(*, attempt: Attempt) -> StreamingHttpResponse:
    """The uploaded full log if there is one, else the reassembled tail (a
    missing range marked in place), as a text/plain attachment, streamed."""
    full = selectors.full_log_get(attempt=attempt)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", attempt.job.key).strip("._") or "job"
    if full is not None:
        response = StreamingHttpResponse(
            fulllog.full_log_chunks(full_log=full), content_type="text/plain; charset=utf-8"
        )
        response["Content-Length"] = str(full.size)
        response["X-Content-SHA256"] = full.sha256
        response["X-Prodmon-Log-Source"] = "full"
        filename = f"{name}.attempt{attempt.number}.log"
    else:
        response = StreamingHttpResponse(
            selectors.log_bytes_iter(attempt=attempt), content_type="text/plain; charset=utf-8"
        )
        response["X-Prodmon-Log-Source"] = "tail"
        filename = f"{name}.attempt{attempt.number}.tail.log"
    response["Content-Disposition"] = content_disposition_header(True, filename)
    response["X-Content-Type-Options"] = "nosniff"
    return response


@login_required
@require_GET
def log_viewer(request, uid):
    attempt = _attempt_or_404(request, uid)
    query = request.GET.get("q", "").strip()[:500]
    line = _int(request.GET.get("line"), lo=1)
    from_line = _int(request.GET.get("from"), lo=1)
    if from_line is None and line is not None:
        from_line = max(1, line - CONTEXT_LINES)
    page = selectors.log_page(attempt=attempt, from_line=from_line, search=query)
    hits = None
    if query:
        hits = selectors.log_search(
            experiment_ids={attempt.job.stage.campaign.experiment_id},
            text=query,
            attempt_ids=[attempt.pk],
            limit=IN_LOG_HITS,
        )
    job = attempt.job
    return render(
        request,
        "logserver/log_viewer.html",
        {
            "attempt": attempt,
            "job": job,
            "stage": job.stage,
            "campaign": job.stage.campaign,
            "page": page,
            "page_lines": selectors.PAGE_LINES,
            "line": line,
            "query": query,
            "hits": hits,
            "full_log": selectors.full_log_get(attempt=attempt),
            "live": not attempt.is_ended and page.at_end,
            "tail": from_line is None,
        },
    )


@login_required
@require_GET
def log_lines(request, uid):
    """JSON lines from a byte offset: the viewer's live refresh and "show full line"."""
    attempt = _attempt_or_404(request, uid)
    offset = _int(request.GET.get("offset"), 0, lo=0)
    line = _int(request.GET.get("line"), 1, lo=1)
    full = request.GET.get("full") == "1"
    limit = 1 if full else _int(request.GET.get("limit"), selectors.PAGE_LINES, 1, 2000)
    cap = selectors.FULL_LINE_CAP if full else selectors.DISPLAY_CAP
    result = selectors.log_lines_after(
        attempt=attempt, offset=offset, line=line, limit=limit, cap=cap
    )
    return JsonResponse(
        {
            "lines": [x.as_json() for x in result.lines],
            "next_offset": result.next_offset,
            "next_line": result.next_line,
            "log_bytes": result.log_bytes,
            "more": result.more,
            "running": not attempt.is_ended,
            "cap": cap,
        }
    )


@login_required
@require_GET
def log_download(request, uid):
    return log_download_response(attempt=_attempt_or_404(request, uid))


class LogSearchForm(forms.Form):
    q = forms.CharField(label="Search", max_length=500, required=False)
    experiment = forms.ChoiceField(required=False)
    campaign = forms.CharField(required=False, max_length=128)
    stage = forms.CharField(required=False, max_length=128)
    site = forms.CharField(required=False, max_length=128)
    node = forms.CharField(required=False, max_length=255)
    exit_code = forms.IntegerField(required=False, min_value=-(2**31), max_value=2**31)
    error_class = forms.CharField(required=False, max_length=200, label="Error class (id or key)")
    since = forms.DateTimeField(
        required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )
    until = forms.DateTimeField(
        required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )

    def __init__(self, *args, experiments=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["experiment"].choices = [("", "all my experiments")] + [
            (e.name, e.name) for e in experiments
        ]


@login_required
@require_GET
def log_search_page(request):
    experiment_ids = production.experiment_ids_for_user(user=request.user)
    experiments = production.experiment_list_by_ids(experiment_ids=experiment_ids).order_by("name")
    form = LogSearchForm(request.GET or None, experiments=experiments)
    result = None
    offset = _int(request.GET.get("offset"), 0, lo=0, hi=10_000)
    if form.is_valid() and form.cleaned_data["q"].strip():
        data = form.cleaned_data
        result = selectors.log_search(
            experiment_ids=experiment_ids,
            text=data["q"],
            experiment=data["experiment"] or "",
            campaign=data["campaign"],
            stage=data["stage"],
            site=data["site"],
            node=data["node"],
            exit_code=data["exit_code"],
            error_class=data["error_class"],
            since=data["since"],
            until=data["until"],
            limit=SEARCH_PAGE,
            offset=offset,
        )
    params = request.GET.copy()
    params.pop("offset", None)
    return render(
        request,
        "logserver/search.html",
        {
            "form": form,
            "result": result,
            "offset": offset,
            "last_shown": offset + len(result.hits) if result else 0,
            "next_offset": offset + SEARCH_PAGE,
            "prev_offset": max(0, offset - SEARCH_PAGE),
            "params": params.urlencode(),
        },
    )
