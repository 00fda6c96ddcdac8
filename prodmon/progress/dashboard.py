"""What the campaign pages (prodmon.views.campaign_list, campaign_detail) show
of progress: estimates, the dependency picture, charts, per-site counts."""

from __future__ import annotations

import logging

from prodmon.models import Campaign
from prodmon.progress import charts
from prodmon.progress import selectors as progress
from prodmon.progress.estimates import CampaignEstimate
from prodmon.selectors import StageProgress

logger = logging.getLogger(__name__)

LIST_ESTIMATES = 20  # the list page estimates at most this many active campaigns


def campaign_dashboard(*, campaign: Campaign, stages: list[StageProgress]) -> dict:
    from prodmon.progress.views import plotly_url

    estimate = progress.campaign_estimate(campaign=campaign)
    series = progress.stage_progress_series(progress=stages)
    throughput = progress.campaign_throughput(campaign=campaign)
    return {
        "estimate": estimate,
        "etas": {sid: e for sid, e in estimate.stages.items()},
        "pipeline": progress.pipeline_levels(stages),
        "sites": progress.campaign_site_counts(campaign=campaign),
        "charts": {
            "progress": charts.progress_chart(progress=stages, series=series, estimate=estimate),
            "throughput": charts.throughput_chart(progress=stages, throughput=throughput),
        },
        "plotly_url": plotly_url(),
    }


def campaign_list_estimates(*, campaigns: list[Campaign]) -> dict[int, CampaignEstimate]:
    """Estimates of the active campaigns on the list page, from the cache that
    the refresher task keeps (estimates.campaigns_estimate_refresh)."""
    from prodmon.progress.estimates import campaigns_estimate_cached

    active = [c for c in campaigns if c.state == Campaign.State.ACTIVE][:LIST_ESTIMATES]
    try:
        return campaigns_estimate_cached(campaigns=active)
    except Exception:  # noqa: BLE001 - the list must render even if the estimates fail
        logger.exception("estimates of the campaign list failed")
        return {}
