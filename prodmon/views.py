"""Portal pages. Each view scopes to the user's experiments, calls selectors and
renders; anything outside those experiments is a 404, not a 403, so the pages
never confirm that someone else's campaign exists."""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render
from django_tables2 import RequestConfig

from logserver.selectors import log_tail
from prodmon import selectors
from prodmon.actions.selectors import attempt_batch_event_list
from prodmon.actions.views import job_actions_context
from prodmon.filters import JobFilter
from prodmon.models import Campaign
from prodmon.progress import dashboard
from prodmon.tables import CappedCountPaginator, JobTable
from triage import selectors as triage_selectors

JOBS_PER_PAGE = 50
RECENT_FAILURES = 15


def _experiment_ids(request) -> set[int]:
    return selectors.experiment_ids_for_user(user=request.user)


@login_required
def campaign_list(request):
    state = request.GET.get("state", "")
    if state not in Campaign.State.values:
        state = ""
    campaigns = list(
        selectors.campaign_list(experiment_ids=_experiment_ids(request), state=state or None)
    )
    progress = selectors.campaign_progress(campaigns=campaigns)
    estimates = dashboard.campaign_list_estimates(campaigns=campaigns)
    cards = []
    for c in campaigns:
        estimate = estimates.get(c.pk)
        etas = estimate.stages if estimate else {}
        cards.append((c, [(p, etas.get(p.stage.pk)) for p in progress[c.pk]], estimate))
    return render(
        request,
        "prodmon/campaign_list.html",
        {
            "rows": [(c, progress[c.pk]) for c in campaigns],
            "cards": cards,  # rows with each stage's estimate and the campaign's
            "state": state,
            "states": Campaign.State.values,
            "page_cache_seconds": settings.PRODMON_PAGE_CACHE_SECONDS,
        },
    )


@login_required
def campaign_detail(request, pk):
    campaign = selectors.campaign_get(pk=pk, experiment_ids=_experiment_ids(request))
    if campaign is None:
        raise Http404("no such campaign in your experiments")
    progress = selectors.campaign_progress(campaigns=[campaign])[campaign.pk]
    configs = selectors.stage_config_map(stage_ids=[p.stage.pk for p in progress])
    board = dashboard.campaign_dashboard(campaign=campaign, stages=progress)
    return render(
        request,
        "prodmon/campaign_detail.html",
        {
            **board,
            "campaign": campaign,
            "stages": [(p, configs.get(p.stage.pk)) for p in progress],
            "stage_rows": [
                (p, configs.get(p.stage.pk), board["etas"].get(p.stage.pk)) for p in progress
            ],
            "failures": selectors.campaign_failed_attempt_list(
                campaign=campaign, limit=RECENT_FAILURES
            ),
            "page_cache_seconds": settings.PRODMON_PAGE_CACHE_SECONDS,
        },
    )


@login_required
def job_list(request):
    experiment_ids = _experiment_ids(request)
    jobs = JobFilter(
        request.GET,
        selectors.job_table_list(experiment_ids=experiment_ids),
        experiment_ids=experiment_ids,
    )
    # An invalid filter (say, a stage id from another experiment) shows its error
    # and no rows, instead of being silently dropped and showing everything.
    rows = jobs.qs if jobs.is_valid() else jobs.queryset.none()
    table = JobTable(rows)
    RequestConfig(
        request,
        paginate={"per_page": JOBS_PER_PAGE, "paginator_class": CappedCountPaginator},
    ).configure(table)
    return render(
        request,
        "prodmon/job_list.html",
        {
            "filter": jobs,
            "table": table,
            "is_filtered": any(request.GET.get(name) for name in jobs.filters),
        },
    )


@login_required
def job_detail(request, pk):
    job = selectors.job_get(pk=pk, experiment_ids=_experiment_ids(request))
    if job is None:
        raise Http404("no such job in your experiments")
    attempts = list(selectors.job_attempt_list(job=job))
    return render(
        request,
        "prodmon/job_detail.html",
        {"job": job, "attempts": attempts, **job_actions_context(request, job, attempts=attempts)},
    )


@login_required
def attempt_detail(request, uid):
    attempt = selectors.attempt_get(uid=uid, experiment_ids=_experiment_ids(request))
    if attempt is None:
        raise Http404("no such attempt in your experiments")
    siblings = list(selectors.job_attempt_list(job=attempt.job))
    return render(
        request,
        "prodmon/attempt_detail.html",
        {
            "attempt": attempt,
            "job": attempt.job,
            "stage": attempt.job.stage,
            "campaign": attempt.job.stage.campaign,
            "siblings": siblings,
            "outputs": list(selectors.attempt_output_list(attempt=attempt)),
            "log": log_tail(attempt=attempt),
            "batch_events": attempt_batch_event_list(attempt=attempt),
            "classification": triage_selectors.attempt_classification_get(attempt=attempt),
            **job_actions_context(request, attempt.job, attempts=[attempt]),
        },
    )
