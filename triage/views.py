"""Triage pages: the error summary, a class page, and shifters' rule editing.

Every page needs a login and shows only the user's experiments; anything
outside them is a 404. Changing things needs the shifter role in that
experiment (403 for a viewer), a POST and a CSRF token, and is audited by the
service it calls.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from prodmon import selectors as production
from prodmon.models import Experiment, Role
from triage import charts, selectors, services
from triage.forms import (
    ErrorClassForm,
    RuleForm,
    StatusForm,
    SummaryFilterForm,
    pattern_from_template,
)
from triage.kb import Category
from triage.models import ErrorClass, SignatureRule
from triage.tasks import rule_reclassify_task


def _experiment_ids(request) -> set[int]:
    return production.experiment_ids_for_user(user=request.user)


def _require_shifter(request, experiment_id: int) -> None:
    """404 outside the experiment, 403 below shifter."""
    role = production.user_role(user=request.user, experiment_id=experiment_id)
    if role is None:
        raise Http404("no such experiment in your experiments")
    if role < Role.SHIFTER:
        raise PermissionDenied("only shifters may change error classes and rules")


def _is_shifter(request, experiment_id: int) -> bool:
    role = production.user_role(user=request.user, experiment_id=experiment_id)
    return role is not None and role >= Role.SHIFTER


def _class_or_404(request, pk: int) -> ErrorClass:
    error_class = selectors.error_class_get(pk=pk, experiment_ids=_experiment_ids(request))
    if error_class is None:
        raise Http404("no such error class in your experiments")
    return error_class


def jobs_url(params: dict) -> str:
    return f"{reverse('job-list')}?{urlencode(params)}"


def class_jobs_params(error_class: ErrorClass, base: dict | None = None) -> dict:
    params = dict(base or {"state": "failed"})
    params.setdefault("experiment", str(error_class.experiment_id))
    # The job table's error-class filter: jobs whose latest failure is in it.
    params["error_class"] = str(error_class.pk)
    return params


# --- pages ---------------------------------------------------------------------------


@login_required
@require_GET
def error_summary(request):
    experiment_ids = _experiment_ids(request)
    experiments = production.experiment_list_by_ids(experiment_ids=experiment_ids)
    form = SummaryFilterForm(
        request.GET or None, experiment_ids=experiment_ids, experiments=experiments
    )
    filters = form.filters()
    summary = selectors.error_summary(filters=filters)
    job_params = filters.job_table_params()
    return render(
        request,
        "triage/summary.html",
        {
            "form": form,
            "summary": summary,
            "filters": filters,
            "sites": selectors.site_choices(experiment_ids=experiment_ids),
            "jobs_url": jobs_url(job_params),
            "rows": [
                (row, jobs_url(class_jobs_params(row.error_class, job_params)))
                for row in summary.rows
            ],
            "matrix_rows": _matrix_rows(summary, job_params),
            "wall_chart": charts.wall_time_chart(summary.rows),
            "can_add_rule": any(_is_shifter(request, e.pk) for e in experiments),
            "querystring": request.GET.urlencode(),
        },
    )


def _matrix_rows(summary, job_params: dict) -> list:
    rows = []
    peak = max((c.failures for c in summary.matrix.values()), default=0)
    for stage in summary.stages:
        cells = []
        for site in summary.sites:
            cell = summary.cell(stage.pk, site)
            params = {**job_params, "stage": str(stage.pk)}
            if site:
                params["site"] = site
            heat = 0 if cell is None or not peak else max(1, round(5 * cell.failures / peak))
            cells.append((site, cell, jobs_url(params), heat))
        rows.append((stage, cells))
    return rows


@login_required
@require_GET
def error_class_detail(request, pk: int):
    error_class = _class_or_404(request, pk)
    if error_class.merged_into_id is not None:
        messages.info(request, "This class was merged into another one.")
        return redirect(error_class.merged_into)
    trend = selectors.error_class_trend(error_class=error_class)
    samples = selectors.error_class_samples(error_class=error_class)
    can_edit = _is_shifter(request, error_class.experiment_id)
    return render(
        request,
        "triage/class_detail.html",
        {
            "error_class": error_class,
            "affected": selectors.error_class_affected(error_class=error_class),
            "samples": [
                (
                    s,
                    selectors.attempt_line_url(attempt=s.attempt, line_number=s.line_number)
                    if s.line_number and s.line_is_absolute
                    else "",
                )
                for s in samples
            ],
            "trend_24h": charts.trend_chart(trend["hourly"], hourly=True),
            "trend_14d": charts.trend_chart(trend["daily"], hourly=False),
            "jobs_url": jobs_url(class_jobs_params(error_class)),
            "can_edit": can_edit,
            "status_choices": ErrorClass.Status.choices,
            "rules": list(error_class.rules.all()),
            "category_label": dict(Category.CHOICES).get(error_class.category, ""),
        },
    )


@login_required
@require_POST
def error_class_status(request, pk: int):
    error_class = _class_or_404(request, pk)
    _require_shifter(request, error_class.experiment_id)
    form = StatusForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Unknown status.")
    else:
        services.error_class_set_status(
            error_class=error_class, status=form.cleaned_data["status"], actor=request.user
        )
        messages.success(request, f"Marked {form.cleaned_data['status']}.")
    return redirect(error_class)


@login_required
@require_http_methods(["GET", "POST"])
def error_class_edit(request, pk: int):
    error_class = _class_or_404(request, pk)
    _require_shifter(request, error_class.experiment_id)
    if request.method == "POST":
        form = ErrorClassForm(request.POST)
        if form.is_valid():
            services.error_class_update(
                error_class=error_class, actor=request.user, **form.cleaned_data
            )
            messages.success(request, "Saved.")
            return redirect(error_class)
    else:
        form = ErrorClassForm(initial=ErrorClassForm.initial_for(error_class))
    return render(request, "triage/class_edit.html", {"error_class": error_class, "form": form})


# --- rules ---------------------------------------------------------------------------


@login_required
@require_GET
def rule_list(request):
    experiment_ids = _experiment_ids(request)
    experiments = list(production.experiment_list_by_ids(experiment_ids=experiment_ids))
    return render(
        request,
        "triage/rule_list.html",
        {
            "rules": list(selectors.rule_list(experiment_ids=experiment_ids)),
            "builtins": selectors.builtin_rule_list(),
            "shifter_experiments": [e for e in experiments if _is_shifter(request, e.pk)],
        },
    )


def _experiment_for_new_rule(request) -> Experiment:
    raw = request.POST.get("experiment") or request.GET.get("experiment")
    experiment_ids = _experiment_ids(request)
    if raw is None or raw == "":
        shifter_of = [pk for pk in sorted(experiment_ids) if _is_shifter(request, pk)]
        if not shifter_of:
            raise PermissionDenied("only shifters may create rules")
        raw = shifter_of[0]
    try:
        experiment_id = int(raw)
    except (TypeError, ValueError) as exc:
        raise Http404("no such experiment") from exc
    if experiment_id not in experiment_ids:
        raise Http404("no such experiment in your experiments")
    _require_shifter(request, experiment_id)
    return Experiment.objects.get(pk=experiment_id)


@login_required
@require_http_methods(["GET", "POST"])
def rule_create(request):
    experiment = _experiment_for_new_rule(request)
    return _rule_form(request, experiment=experiment, rule=None, error_class=None)


@login_required
@require_http_methods(["GET", "POST"])
def rule_edit(request, pk: int):
    rule = selectors.rule_get(pk=pk, experiment_ids=_experiment_ids(request))
    if rule is None:
        raise Http404("no such rule in your experiments")
    _require_shifter(request, rule.experiment_id)
    return _rule_form(request, experiment=rule.experiment, rule=rule, error_class=rule.error_class)


@login_required
@require_http_methods(["GET", "POST"])
def error_class_promote(request, pk: int):
    """Turn a cluster into a rule: the cluster's class becomes the rule's class."""
    error_class = _class_or_404(request, pk)
    _require_shifter(request, error_class.experiment_id)
    if error_class.rules.exists():
        return redirect("triage-rule-edit", pk=error_class.rules.first().pk)
    return _rule_form(
        request, experiment=error_class.experiment, rule=None, error_class=error_class
    )


def _rule_form(request, *, experiment: Experiment, rule, error_class):
    scope = f"{experiment.pk}:{rule.pk if rule else 'new'}:{error_class.pk if error_class else ''}"
    preview = None
    if request.method == "POST":
        form = RuleForm(request.POST)
        action = request.POST.get("action", "preview")
        if form.is_valid():
            if action == "save" and form.preview_is_current(scope=scope):
                saved = _rule_save(request, form, experiment, rule, error_class)
                return redirect(saved.error_class)
            if action == "save":
                messages.warning(
                    request,
                    "The rule changed since its preview (or the preview is old): check the "
                    "new preview below, then save.",
                )
            preview = _preview(experiment, form, rule, error_class)
            data = request.POST.copy()
            data["preview_token"] = form.signed_token(scope=scope)
            form = RuleForm(data, probe=False)
            form.is_valid()
    else:
        form = RuleForm(initial=_rule_initial(rule, error_class))
    return render(
        request,
        "triage/rule_form.html",
        {
            "form": form,
            "experiment": experiment,
            "rule": rule,
            "error_class": error_class,
            "preview": preview,
            "can_save": preview is not None,
        },
    )


def _rule_initial(rule: SignatureRule | None, error_class: ErrorClass | None) -> dict:
    if rule is not None:
        return {
            "name": rule.name,
            "pattern": rule.pattern,
            "ignore_case": rule.ignore_case,
            "priority": rule.priority,
            "job_types": rule.job_types,
            "exit_codes": rule.exit_codes,
            "enabled": rule.enabled,
            **ErrorClassForm.initial_for(rule.error_class),
        }
    if error_class is not None:
        return {
            "name": error_class.title[:200],
            "pattern": pattern_from_template(error_class.template or error_class.title),
            "priority": 100,
            "enabled": True,
            **ErrorClassForm.initial_for(error_class),
        }
    return {"priority": 100, "enabled": True, "category": Category.UNKNOWN}


def _preview(experiment, form: RuleForm, rule, error_class):
    candidate = SignatureRule(
        pk=rule.pk if rule else None,
        experiment=experiment,
        error_class_id=(rule.error_class_id if rule else error_class.pk if error_class else None),
        **form.rule_data(),
    )
    return selectors.rule_preview(
        experiment_id=experiment.pk,
        candidate=selectors.compile_rule(candidate),
        exclude_rule_id=rule.pk if rule else None,
    )


def _rule_save(request, form: RuleForm, experiment, rule, error_class) -> SignatureRule:
    if rule is None:
        saved = services.rule_create(
            experiment=experiment,
            actor=request.user,
            rule_data=form.rule_data(),
            class_data=form.class_data(),
            error_class=error_class,
        )
        messages.success(request, f"Rule “{saved.name}” created.")
    else:
        saved = services.rule_update(
            rule=rule, actor=request.user, rule_data=form.rule_data(), class_data=form.class_data()
        )
        messages.success(request, f"Rule “{saved.name}” saved.")
    # What the preview showed happens now: recent failures are classified again.
    rule_id = saved.pk
    transaction.on_commit(lambda: rule_reclassify_task.delay(rule_id))
    return saved


# --- plotly ----------------------------------------------------------------------------


@login_required
@require_GET
@cache_control(private=True, max_age=7 * 24 * 3600)
def plotly_js(request):
    """plotly.js from the installed plotly package: no CDN, cached by the browser."""
    return HttpResponse(charts.plotly_js(), content_type="application/javascript")
