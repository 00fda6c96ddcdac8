"""Progress pages: a stage's completeness, estimates and resource advice; the
reprocessing estimator; efficiency reports and their exports; notification
settings. Scoped to the user's experiments: anything else is a 404."""

from __future__ import annotations

import csv
import datetime as dt
import functools
import gzip
import io

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from prodmon import selectors as production
from prodmon.models import Experiment, NotificationKind, Role
from prodmon.progress import charts, reports, services
from prodmon.progress import selectors as progress
from prodmon.progress.forms import (
    EstimateForm,
    ExpectedInputsForm,
    ReportFilterForm,
    SubscriptionForm,
)
from prodmon.progress.services import InputListError

PREVIEW = 50


def _experiment_ids(request) -> set[int]:
    return production.experiment_ids_for_user(user=request.user)


def _stage_or_404(request, pk: int):
    stage = progress.stage_get(pk=pk, experiment_ids=_experiment_ids(request))
    if stage is None:
        raise Http404("no such stage in your experiments")
    return stage


def is_manager(user, experiment_id: int) -> bool:
    role = production.user_role(user=user, experiment_id=experiment_id)
    return role is not None and role >= Role.MANAGER


# --- plotly.js --------------------------------------------------------------------------


@functools.cache
def _plotly_bytes() -> tuple[bytes, bytes, str]:
    import plotly
    from plotly.offline import get_plotlyjs

    raw = get_plotlyjs().encode()
    return raw, gzip.compress(raw, compresslevel=6), plotly.__version__


@require_GET
def plotly_js(request):
    """plotly.min.js from the installed plotly package: no CDN. Cached for a
    year by the browser; the URL carries the version, so an upgrade is fetched."""
    raw, packed, version = _plotly_bytes()
    etag = f'"plotly-{version}"'
    if request.headers.get("If-None-Match") == etag:
        return HttpResponse(status=304)
    use_gzip = "gzip" in request.headers.get("Accept-Encoding", "")
    response = HttpResponse(packed if use_gzip else raw, content_type="text/javascript")
    if use_gzip:
        response["Content-Encoding"] = "gzip"
    response["Vary"] = "Accept-Encoding"
    response["ETag"] = etag
    response["Cache-Control"] = "public, max-age=31536000, immutable"
    return response


def plotly_url() -> str:
    return f"{reverse('progress-plotly-js')}?v={_plotly_bytes()[2]}"


# --- a stage -----------------------------------------------------------------------------


@login_required
@require_GET
def stage_detail(request, pk):
    stage = _stage_or_404(request, pk)
    campaign = stage.campaign
    estimate = progress.campaign_estimate(campaign=campaign)
    stage_progress = production.stage_progress_list(stages=[stage])[0]
    completeness = progress.stage_completeness(stage_id=stage.pk)
    return render(
        request,
        "progress/stage_detail.html",
        {
            "stage": stage,
            "campaign": campaign,
            "p": stage_progress,
            "eta": estimate.stages.get(stage.pk),
            "completeness": completeness,
            "missing_preview": completeness.missing[:PREVIEW],
            "duplicates_preview": completeness.duplicates[:PREVIEW],
            "merge": progress.stage_merge_check(stage_id=stage.pk),
            "resources": progress.stage_resource_suggestion(stage.pk),
            "snapshots": progress.stage_input_snapshots(stage_id=stage.pk),
            "can_declare": is_manager(request.user, campaign.experiment_id),
            "form": ExpectedInputsForm(),
            "preview": PREVIEW,
        },
    )


@login_required
@require_POST
def stage_inputs_declare(request, pk):
    stage = _stage_or_404(request, pk)
    if not is_manager(request.user, stage.campaign.experiment_id):
        raise PermissionDenied("only a production manager declares a stage's expected inputs")
    form = ExpectedInputsForm(request.POST, request.FILES)
    if form.is_valid():
        try:
            snapshot = services.stage_inputs_declare(
                stage=stage,
                items=services.parse_input_list(form.cleaned_data["text"]),
                source=form.cleaned_data["source"],
                actor=request.user,
                note=form.cleaned_data.get("note", ""),
            )
        except InputListError as exc:
            messages.error(request, f"Not declared: {exc}")
        else:
            messages.success(request, f"Declared {snapshot.file_count:,} expected inputs.")
    else:
        for error in form.non_field_errors() or ["invalid form"]:
            messages.error(request, f"Not declared: {error}")
    return redirect("progress-stage", pk=stage.pk)


def _text(lines: list[str], filename: str) -> HttpResponse:
    response = HttpResponse("".join(f"{line}\n" for line in lines), content_type="text/plain")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _csv(rows: list[list], filename: str) -> HttpResponse:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    response = HttpResponse(buf.getvalue(), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@login_required
@require_GET
def stage_inputs_download(request, pk, which, fmt):
    """missing / duplicates as .txt (one name per line) or .csv."""
    stage = _stage_or_404(request, pk)
    completeness = progress.stage_completeness(stage_id=stage.pk)
    base = f"{stage.campaign.name}-{stage.name}-{which}"
    if which == "missing":
        if fmt == "txt":
            return _text(completeness.missing, f"{base}.txt")
        return _csv([["input"], *[[n] for n in completeness.missing]], f"{base}.csv")
    if fmt == "txt":
        return _text([d.name for d in completeness.duplicates], f"{base}.txt")
    return _csv(
        [
            ["input", "attempts", "outputs"],
            *[[d.name, d.attempts, " ".join(d.outputs)] for d in completeness.duplicates],
        ],
        f"{base}.csv",
    )


# --- reprocessing estimate ------------------------------------------------------------------


@login_required
@require_GET
def reprocessing_estimate(request):
    experiment_ids = _experiment_ids(request)
    job_types = progress.job_type_list(experiment_ids=experiment_ids)
    form = EstimateForm(request.GET or None, job_types=job_types)
    result = None
    if form.is_bound and form.is_valid():
        result = progress.reprocessing_estimate(
            experiment_ids=experiment_ids,
            job_type=form.cleaned_data["job_type"],
            inputs=form.cleaned_data["inputs"],
            slots=form.cleaned_data.get("slots"),
        )
    return render(
        request,
        "progress/estimate.html",
        {"form": form, "result": result, "job_types": job_types},
    )


# --- reports ---------------------------------------------------------------------------------


def _report_from_request(request) -> tuple[ReportFilterForm, reports.EfficiencyReport | None]:
    experiment_ids = _experiment_ids(request)
    form = ReportFilterForm(request.GET or None, experiment_ids=experiment_ids)
    if form.is_bound and not form.is_valid():
        return form, None
    data = form.cleaned_data if form.is_bound else {}
    since, until = reports.default_range()
    if data.get("since"):
        since = dt.datetime.combine(data["since"], dt.time(), tzinfo=dt.UTC)
    if data.get("until"):
        until = dt.datetime.combine(data["until"] + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    scope = experiment_ids
    if data.get("experiment"):
        scope = {data["experiment"].pk}
    campaign = data.get("campaign")
    filters = reports.ReportFilters(
        experiment_ids=frozenset(scope),
        since=since,
        until=until,
        campaign_id=campaign.pk if campaign else None,
        site=data.get("site") or "",
    )
    by = data.get("by") or "campaign"
    return form, reports.efficiency_report(filters=filters, by=by)


@login_required
@require_GET
def report_page(request):
    form, report = _report_from_request(request)
    query = request.GET.copy()
    tabs = []
    for g in reports.GROUPINGS:
        query["by"] = g
        tabs.append((g, query.urlencode()))
    query.pop("by", None)
    return render(
        request,
        "progress/reports.html",
        {
            "form": form,
            "report": report,
            "charts": charts.report_charts(report) if report else {},
            "tabs": tabs,
            "query": request.GET.urlencode(),
            "plotly_url": plotly_url(),
        },
    )


@login_required
@require_GET
def report_export(request, fmt):
    form, report = _report_from_request(request)
    if report is None:
        return JsonResponse({"errors": form.errors}, status=400)
    stamp = f"{report.filters.since:%Y%m%d}-{report.filters.until:%Y%m%d}"
    if fmt == "json":
        return JsonResponse(report.as_dict())
    if fmt == "errors.csv":
        body, name = reports.errors_csv(report), f"prodmon-errors-{stamp}.csv"
    else:
        body, name = reports.report_csv(report), f"prodmon-efficiency-by-{report.by}-{stamp}.csv"
    response = HttpResponse(body, content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


# --- notification settings --------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def subscriptions(request):
    experiment_ids = _experiment_ids(request)
    experiments = list(Experiment.objects.filter(pk__in=experiment_ids).order_by("name"))
    if request.method == "POST":
        experiment = next(
            (e for e in experiments if str(e.pk) == request.POST.get("experiment")), None
        )
        if experiment is None:
            raise Http404("no such experiment in your memberships")
        form = SubscriptionForm(request.POST, prefix=f"e{experiment.pk}")
        if form.is_valid():
            data = form.cleaned_data
            services.notification_subscription_set(
                user=request.user,
                experiment=experiment,
                kinds=data["kinds"],
                by_email=data["by_email"],
                webhook_url=data["webhook_url"],
                webhook_secret=data["webhook_secret"] or None,
            )
            services.report_subscription_set(
                user=request.user, experiment=experiment, subscribed=data["weekly_report"]
            )
            messages.success(request, f"Saved your notifications for {experiment.name}.")
            return redirect("progress-subscriptions")
        messages.error(
            request, "Not saved: " + "; ".join(f"{k}: {v[0]}" for k, v in form.errors.items())
        )
    subs = progress.notification_subscription_map(user=request.user, experiment_ids=experiment_ids)
    weekly = progress.report_subscription_ids(user=request.user, experiment_ids=experiment_ids)
    rows = []
    for e in experiments:
        sub = subs.get(e.pk)
        initial = {
            "kinds": sub.kinds if sub else [],
            "by_email": sub.by_email if sub else True,
            "webhook_url": sub.webhook_url if sub else "",
            "weekly_report": e.pk in weekly,
        }
        rows.append((e, sub, SubscriptionForm(initial=initial, prefix=f"e{e.pk}")))
    return render(
        request,
        "progress/subscriptions.html",
        {
            "rows": rows,
            "kinds": NotificationKind.choices,
            "recent": progress.notification_list(user=request.user),
            "has_email": bool(request.user.email),
        },
    )
