"""Action pages: retry (one job, or many after a confirmation page with the exact
count), recovery, stage launch / hold / release / finish / abort, the action
progress page, the submission page and the audit log.

Roles (prodmon.models.Role): a viewer sees; a shifter retries; a production
manager launches, holds, aborts, recovers and forces. Anything outside the
user's experiments is a 404; a role too low for a write is a 403. Every write
is a POST with CSRF, and every one is in the audit log.
"""

import math

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from prodmon import selectors as production
from prodmon.actions import selectors, services
from prodmon.actions.forms import (
    BulkRetryForm,
    LaunchForm,
    RecoveryForm,
    RetryForm,
    new_idempotency_key,
    selection_digest,
)
from prodmon.models import BulkAction, Job, Role, Stage
from prodmon.submission.config import setting

AUDIT_PER_PAGE = 50
# Jobs listed on the bulk retry's confirmation page (the count covers all).
SAMPLE_SIZE = 50


def _visible(request) -> set[int]:
    return production.experiment_ids_for_user(user=request.user)


def _role_or_404(request, experiment_id: int) -> int:
    role = production.user_role(user=request.user, experiment_id=experiment_id)
    if role is None:
        raise Http404("no such object in your experiments")
    return role


def _require(role: int, min_role: Role, what: str) -> None:
    if role < min_role:
        raise PermissionDenied(f"{what} needs the {Role(min_role).label} role")


def _safe_next(request, url: str, default: str) -> str:
    if url and url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return url
    return default


# --- context for the job and attempt pages ------------------------------------------


def job_actions_context(request, job: Job, *, attempts=()) -> dict:
    """What prodmon.views.job_detail / attempt_detail add for the retry panel and
    the audit history of the job and its attempts."""
    role = production.user_role(user=request.user, experiment_id=job.stage.campaign.experiment_id)
    targets = [("job", job.pk)] + [("attempt", a.pk) for a in attempts]
    return {
        "retry": selectors.job_retry_panel(job=job, role=role),
        "retry_key": new_idempotency_key(),
        "audit_entries": selectors.audit_for(targets=targets),
        "role": role,
        "roles": Role,
    }


# --- retry --------------------------------------------------------------------------


@login_required
@require_POST
def job_retry(request, pk):
    job = production.job_get(pk=pk, experiment_ids=_visible(request))
    if job is None:
        raise Http404("no such job in your experiments")
    role = _role_or_404(request, job.stage.campaign.experiment_id)
    _require(role, Role.SHIFTER, "Retrying a job")
    form = RetryForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The retry form was incomplete; reload the page and try again.")
        return redirect(job)
    if form.cleaned_data["force"]:
        _require(role, Role.MANAGER, "Forcing a retry")
    try:
        action, created = services.job_retry_request(
            job=job,
            actor=request.user,
            idempotency_key=form.cleaned_data["idempotency_key"],
            force=form.cleaned_data["force"],
            more_resources=form.cleaned_data["more_resources"],
        )
    except services.ActionRefused as exc:
        messages.error(request, exc.message)
        return redirect(job)
    if not created:
        messages.info(request, "This retry was already requested (the form was sent twice).")
    elif action.done:
        messages.success(request, f"Retry submitted: {action.result}.")
    else:
        why = action.messages[-1] if action.messages else action.result
        messages.error(request, f"Not retried: {why}")
    return redirect(_safe_next(request, form.cleaned_data["next"], job.get_absolute_url()))


def _bulk_context(request, visible: set[int]):
    force = request.GET.get("force") == "1"
    selection = selectors.retry_selection(data=request.GET, experiment_ids=visible)
    preview = (
        selectors.retry_preview(jobs=selection.jobs, force=force)
        if not selection.error
        else selectors.RetryPreview(matched=0, eligible=[])
    )
    experiment_id = next(iter(preview.experiment_ids)) if len(preview.experiment_ids) == 1 else None
    role = (
        production.user_role(user=request.user, experiment_id=experiment_id)
        if experiment_id
        else None
    )
    error = selection.error
    if not error and len(preview.experiment_ids) > 1:
        error = "These jobs belong to several experiments: narrow the filter to one."
    query = request.GET.copy()
    query.pop("force", None)
    sample = (
        selection.jobs.filter(pk__in=preview.eligible[:SAMPLE_SIZE]).order_by("key")
        if preview.eligible
        else []
    )
    return {
        "selection": selection,
        "sample": sample,
        "sample_size": SAMPLE_SIZE,
        "preview": preview,
        "force": force,
        "role": role,
        "roles": Role,
        "error": error,
        "experiment_id": experiment_id,
        "digest": selection_digest(preview.eligible),
        "query": query.urlencode(),
    }


@login_required
@require_http_methods(["GET", "POST"])
def bulk_retry(request):
    visible = _visible(request)
    context = _bulk_context(request, visible)
    preview = context["preview"]
    if request.method == "POST":
        if context["error"] or context["experiment_id"] is None:
            raise PermissionDenied(context["error"] or "nothing to retry")
        role = context["role"]
        _require(role, Role.SHIFTER, "Retrying jobs")
        if context["force"]:
            _require(role, Role.MANAGER, "Forcing a retry")
        form = BulkRetryForm(request.POST)
        if form.is_valid() and form.cleaned_data["selection"] != context["digest"]:
            context["changed"] = True
            messages.warning(
                request,
                "The jobs matching this filter changed since the page was shown. "
                "Check the new count and confirm again.",
            )
        elif form.is_valid():
            stage_ids = preview.stage_ids
            try:
                action, _ = services.bulk_retry_request(
                    experiment=production.experiment_list_by_ids(
                        experiment_ids={context["experiment_id"]}
                    ).get(),
                    job_ids=preview.eligible,
                    filters={k: v for k, v in request.GET.items() if v},
                    actor=request.user,
                    idempotency_key=form.cleaned_data["idempotency_key"],
                    force=context["force"],
                    more_resources=form.cleaned_data["more_resources"],
                    stage=Stage.objects.get(pk=next(iter(stage_ids)))
                    if len(stage_ids) == 1
                    else None,
                )
            except services.ActionRefused as exc:
                messages.error(request, exc.message)
            else:
                return redirect(action)
    context["form"] = BulkRetryForm(
        initial={
            "idempotency_key": new_idempotency_key(),
            "selection": context["digest"],
            "force": context["force"],
        }
    )
    return render(request, "actions/retry_confirm.html", context)


# --- actions ------------------------------------------------------------------------


def _action_or_404(request, pk) -> tuple[BulkAction, int]:
    action = selectors.bulk_action_get(pk=pk, experiment_ids=_visible(request))
    if action is None:
        raise Http404("no such action in your experiments")
    return action, _role_or_404(request, action.experiment_id)


def _may_cancel(request, action: BulkAction, role: int) -> bool:
    return action.is_open and (
        role >= Role.MANAGER or (action.created_by_id == request.user.pk and role >= Role.SHIFTER)
    )


@login_required
@require_GET
def action_detail(request, pk):
    action, role = _action_or_404(request, pk)
    return render(
        request,
        "actions/action_detail.html",
        {
            "action": action,
            "role": role,
            "may_cancel": _may_cancel(request, action, role),
            "seconds_left": max(0, math.ceil((action.not_before - timezone.now()).total_seconds())),
            "submissions": selectors.action_submission_list(action=action),
            "audit_entries": selectors.audit_for_action(action=action),
            "launch_preview": selectors.launch_preview(stage=action.stage)
            if action.kind == BulkAction.Kind.LAUNCH and action.state == BulkAction.State.PENDING
            else None,
        },
    )


@login_required
@require_POST
def action_cancel(request, pk):
    action, role = _action_or_404(request, pk)
    if not _may_cancel(request, action, role):
        if not action.is_open:
            messages.info(request, f"Nothing to cancel: the {action.kind} is {action.state}.")
            return redirect(action)
        raise PermissionDenied("cancelling this needs the production manager role")
    if services.bulk_action_cancel(action=action, actor=request.user):
        messages.success(request, f"The {action.kind} was cancelled: {action.result}.")
    else:
        messages.warning(request, f"Too late to cancel: the {action.kind} is {action.state}.")
    return redirect(action)


# --- stages -------------------------------------------------------------------------


def _stage_or_404(request, pk) -> tuple[Stage, int]:
    stage = selectors.stage_get(pk=pk, experiment_ids=_visible(request))
    if stage is None:
        raise Http404("no such stage in your experiments")
    return stage, _role_or_404(request, stage.campaign.experiment_id)


@login_required
@require_GET
def stage_operations(request, pk):
    stage, role = _stage_or_404(request, pk)
    progress = production.stage_progress_list(stages=[stage])[0]
    return render(
        request,
        "actions/stage_operations.html",
        {
            "stage": stage,
            "campaign": stage.campaign,
            "progress": progress,
            "role": role,
            "roles": Role,
            "is_manager": role >= Role.MANAGER,
            "launch_form": LaunchForm(initial={"idempotency_key": new_idempotency_key()}),
            "launch": selectors.launch_preview(stage=stage),
            "backend": selectors.stage_backend(stage=stage),
            "backout_s": setting("PRODMON_LAUNCH_BACKOUT_SECONDS"),
            "open_attempts": selectors.stage_open_attempt_count(stage=stage),
            "submissions": selectors.stage_submission_list(stage=stage),
            "actions": selectors.bulk_action_list(
                experiment_ids={stage.campaign.experiment_id}, stage=stage, limit=10
            ),
            "recovery_types": selectors.RECOVERY_TYPES,
            "audit_entries": selectors.audit_for(targets=[("stage", stage.pk)]),
        },
    )


@login_required
@require_POST
def stage_launch(request, pk):
    stage, role = _stage_or_404(request, pk)
    _require(role, Role.MANAGER, "Launching a stage")
    form = LaunchForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The launch form was incomplete; reload the page.")
        return redirect("stage-operations", pk=stage.pk)
    try:
        action, created = services.stage_launch_request(
            stage=stage, actor=request.user, idempotency_key=form.cleaned_data["idempotency_key"]
        )
    except services.ActionRefused as exc:
        messages.error(request, f"Not launched: {exc.message}.")
        return redirect("stage-operations", pk=stage.pk)
    if not created:
        messages.info(request, "This launch was already requested (the form was sent twice).")
    return redirect(action)


def _stage_change(request, pk, service, verb: str):
    stage, role = _stage_or_404(request, pk)
    _require(role, Role.MANAGER, f"To {verb} a stage")
    try:
        result = service(stage=stage, actor=request.user)
    except services.ActionRefused as exc:
        messages.error(request, f"Not done: {exc.message}.")
    else:
        messages.success(request, f"Stage {stage.name}: {result}.")
    return redirect("stage-operations", pk=stage.pk)


@login_required
@require_POST
def stage_hold(request, pk):
    return _stage_change(request, pk, services.stage_hold, "hold")


@login_required
@require_POST
def stage_release(request, pk):
    return _stage_change(request, pk, services.stage_release, "release")


@login_required
@require_POST
def stage_finish(request, pk):
    return _stage_change(request, pk, services.stage_finish, "finish")


@login_required
@require_http_methods(["GET", "POST"])
def stage_abort(request, pk):
    stage, role = _stage_or_404(request, pk)
    _require(role, Role.MANAGER, "Aborting a stage")
    if request.method == "POST":
        return _stage_change(request, pk, services.stage_abort, "abort")
    return render(
        request,
        "actions/stage_abort_confirm.html",
        {
            "stage": stage,
            "campaign": stage.campaign,
            "open_attempts": selectors.stage_open_attempt_count(stage=stage),
            "waiting": [
                a
                for a in selectors.bulk_action_list(
                    experiment_ids={stage.campaign.experiment_id}, stage=stage, limit=50
                )
                if a.is_open
            ],
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def stage_recovery(request, pk):
    stage, role = _stage_or_404(request, pk)
    recovery_type = request.GET.get("type") or request.POST.get("recovery_type") or "all"
    if recovery_type not in selectors.RECOVERY_TYPES:
        raise Http404("unknown recovery type")
    force = request.GET.get("force") == "1"
    items = selectors.recovery_candidates(stage=stage, recovery_type=recovery_type)
    preview = selectors.retry_preview(
        jobs=Job.objects.filter(pk__in=[i.job.pk for i in items]),
        force=force,
        allow_succeeded=True,
    )
    digest = selection_digest(preview.eligible)
    if request.method == "POST":
        _require(role, Role.MANAGER, "A recovery")
        form = RecoveryForm(request.POST)
        if form.is_valid() and form.cleaned_data["selection"] != digest:
            messages.warning(request, "The recovery set changed; check the new count and confirm.")
        elif form.is_valid():
            try:
                action, _ = services.recovery_request(
                    stage=stage,
                    recovery_type=recovery_type,
                    job_ids=preview.eligible,
                    actor=request.user,
                    idempotency_key=form.cleaned_data["idempotency_key"],
                    force=force,
                )
            except services.ActionRefused as exc:
                messages.error(request, f"Not recovered: {exc.message}.")
            else:
                return redirect(action)
    return render(
        request,
        "actions/recovery_confirm.html",
        {
            "stage": stage,
            "campaign": stage.campaign,
            "role": role,
            "is_manager": role >= Role.MANAGER,
            "recovery_type": recovery_type,
            "recovery_label": selectors.RECOVERY_TYPES[recovery_type],
            "recovery_tabs": selectors.RECOVERY_TAB_LABELS,
            "recovery_types": selectors.RECOVERY_TYPES,
            "items": items,
            "eligible": set(preview.eligible),
            "preview": preview,
            "force": force,
            "backout_s": setting("PRODMON_LAUNCH_BACKOUT_SECONDS"),
            "form": RecoveryForm(
                initial={
                    "idempotency_key": new_idempotency_key(),
                    "recovery_type": recovery_type,
                    "selection": digest,
                    "force": force,
                }
            ),
        },
    )


# --- submissions and the audit log --------------------------------------------------


@login_required
@require_GET
def submission_detail(request, pk):
    submission = selectors.submission_get(pk=pk, experiment_ids=_visible(request))
    if submission is None:
        raise Http404("no such submission in your experiments")
    return render(
        request,
        "actions/submission_detail.html",
        {
            "submission": submission,
            "stage": submission.stage,
            "campaign": submission.stage.campaign,
            "attempts": selectors.submission_attempt_list(submission=submission),
            "children": list(submission.children.order_by("launched_at")),
        },
    )


@login_required
@require_GET
def audit_list(request):
    visible = _visible(request)
    experiments = list(production.experiment_list_by_ids(experiment_ids=visible))
    try:
        experiment_id = int(request.GET.get("experiment") or 0) or None
    except ValueError:
        experiment_id = None
    if experiment_id not in {e.pk for e in experiments}:
        experiment_id = None
    actor = request.GET.get("actor", "").strip()[:100]
    action = request.GET.get("action", "").strip()[:64]
    include_global = request.user.is_superuser
    entries = selectors.audit_list(
        experiment_ids=visible,
        include_global=include_global,
        experiment_id=experiment_id,
        actor=actor,
        action=action,
    )
    page = Paginator(entries, AUDIT_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "actions/audit_list.html",
        {
            "page": page,
            "experiments": experiments,
            "experiment_id": experiment_id,
            "actor": actor,
            "action": action,
            "action_names": selectors.audit_action_names(
                experiment_ids=visible, include_global=include_global
            ),
            "query": query.urlencode(),
            "is_filtered": bool(experiment_id or actor or action),
        },
    )
