"""Node health pages, the shifter's flag/clear, and the exclusion exports.

Pages need a login and show only the user's experiments (404 outside them);
flagging or clearing needs the shifter role (403 below) and a note, and is
audited by the service. The exports take a logged-in member or an ingest
token with the `read` scope (prodmon.api.caller_experiment_ids): a token sees
only its own experiment.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.views import APIView

from prodmon import selectors as production
from prodmon.api import caller_experiment_ids
from prodmon.models import Role
from triage import selectors, services
from triage.nodehealth import export


def _experiment_ids(request) -> set[int]:
    return production.experiment_ids_for_user(user=request.user)


@login_required
@require_GET
def node_overview(request):
    experiment_ids = _experiment_ids(request)
    window = request.GET.get("window", "24h")
    if window not in selectors.NODE_WINDOWS:
        window = "24h"
    site = request.GET.get("site", "").strip()
    sites = selectors.node_health_overview(experiment_ids=experiment_ids, window=window, site=site)
    nodes = [n for s in sites for n in s.nodes]
    return render(
        request,
        "triage/health/nodes.html",
        {
            "sites": sites,
            "window": window,
            "windows": list(selectors.NODE_WINDOWS),
            "site": site,
            "site_names": sorted({s.site for s in sites}),
            "totals": {
                "sites": len(sites),
                "nodes": len(nodes),
                "black_holes": sum(1 for n in nodes if n.state == "black_hole"),
                "suspects": sum(1 for n in nodes if n.state == "suspect"),
            },
            "excluded": selectors.node_exclusion_list(None)
            if request.user.is_superuser
            else sorted({h for e in experiment_ids for h in selectors.node_exclusion_list(e)}),
        },
    )


@login_required
@require_GET
def node_detail(request, pk: int):
    health = selectors.node_health_get(pk=pk, experiment_ids=_experiment_ids(request))
    if health is None:
        raise Http404("no such node in your experiments")
    role = production.user_role(user=request.user, experiment_id=health.experiment_id)
    return render(
        request,
        "triage/health/node_detail.html",
        {
            "health": health,
            "evidence": health.evidence,
            "events": selectors.node_health_events(health=health),
            "hours": selectors.node_hourly_outcomes(health=health),
            "failures": selectors.node_recent_failures(health=health),
            "can_set": role is not None and role >= Role.SHIFTER,
        },
    )


@login_required
@require_POST
def node_set(request, pk: int):
    health = selectors.node_health_get(pk=pk, experiment_ids=_experiment_ids(request))
    if health is None:
        raise Http404("no such node in your experiments")
    role = production.user_role(user=request.user, experiment_id=health.experiment_id)
    if role is None or role < Role.SHIFTER:
        raise PermissionDenied("only shifters may flag or clear nodes")
    action = request.POST.get("action")
    if action not in ("flag", "clear"):
        messages.error(request, "Choose flag or clear.")
        return redirect("health-node-detail", pk=pk)
    try:
        services.node_health_set(
            health_id=health.pk,
            flag=action == "flag",
            actor=request.user,
            note=request.POST.get("note", ""),
        )
    except services.NodeHealthNoteRequired:
        messages.error(request, "Say why in a note: it goes to the audit log.")
        return redirect("health-node-detail", pk=pk)
    verb = "flagged as a black hole" if action == "flag" else "cleared"
    messages.success(request, f"{health.node.hostname} {verb}.")
    return redirect("health-node-detail", pk=pk)


@login_required
@require_GET
def attention(request):
    """Lost and hung attempts (with the events they leave undone), duplicate
    completions (which attempt counts) and partial failures (what to redo),
    for the user's experiments or one campaign of them (`?campaign=<id>`)."""
    experiment_ids = _experiment_ids(request)
    campaign = None
    raw = request.GET.get("campaign", "").strip()
    if raw:
        if not raw.isdigit():
            return render(
                request,
                "triage/health/attention.html",
                {"error": f"campaign must be a campaign id, not {raw!r}"},
                status=400,
            )
        campaign = production.campaign_get(pk=int(raw), experiment_ids=experiment_ids)
        if campaign is None:
            raise Http404("no such campaign in your experiments")
    campaign_id = campaign.pk if campaign else None
    show_resolved = request.GET.get("resolved") == "1"
    return render(
        request,
        "triage/health/attention.html",
        {
            "campaign": campaign,
            "show_resolved": show_resolved,
            "liveness": selectors.liveness_list(
                experiment_ids=experiment_ids, campaign_id=campaign_id
            ),
            "duplicates": selectors.duplicate_completion_list(
                experiment_ids=experiment_ids, campaign_id=campaign_id
            ),
            "partials": selectors.partial_failure_list(
                experiment_ids=experiment_ids,
                campaign_id=campaign_id,
                include_resolved=show_resolved,
            ),
            "kinds": dict(selectors.ATTENTION_CHOICES),
        },
    )


# --- exports ------------------------------------------------------------------------


class ExclusionExportApi(APIView):
    """The black-hole exclusion list: HTCondor requirements, Slurm --exclude, JSON.

    `?experiment=<name>` narrows a logged-in member's list to one experiment.
    """

    class ExclusionInputSerializer(serializers.Serializer):
        experiment = serializers.CharField(required=False, allow_blank=True)

    fmt = "json"

    @extend_schema(
        parameters=[ExclusionInputSerializer],
        responses={
            (200, "application/json"): OpenApiTypes.OBJECT,
            (200, "text/plain"): OpenApiTypes.STR,
        },
    )
    def get(self, request):
        params = self.ExclusionInputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        experiment_ids = caller_experiment_ids(request)
        name = params.validated_data.get("experiment") or ""
        experiments = production.experiment_list_by_ids(experiment_ids=experiment_ids)
        if name:
            experiments = experiments.filter(name=name)
            experiment_ids = set(experiments.values_list("pk", flat=True))
            if not experiment_ids:
                raise NotFound("no such experiment in yours")
        hosts = sorted({h for e in experiment_ids for h in selectors.node_exclusion_list(e)})
        if self.fmt == "htcondor":
            body = export.htcondor_requirements(hosts) + "\n"
        elif self.fmt == "slurm":
            body = export.slurm_exclude(hosts) + "\n"
        else:
            only = experiments.first().name if name else None
            body = export.exclusion_json(
                selectors.node_exclusion_rows(experiment_ids=experiment_ids),
                experiment=only,
                generated_at=timezone.now().isoformat(),
            )
            return HttpResponse(body, content_type="application/json")
        return HttpResponse(body, content_type="text/plain; charset=utf-8")
