"""File downloads of the portal (kept apart from the page views)."""

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.views.decorators.http import require_GET

from prodmon import selectors, services


@require_GET
@login_required
def stage_config_archive(request, pk: int):
    snapshot = selectors.config_snapshot_get(
        stage_id=pk, experiment_ids=selectors.experiment_ids_for_user(user=request.user)
    )
    if snapshot is None:
        raise Http404("no config snapshot for this stage in your experiments")
    response = HttpResponse(
        services.config_snapshot_archive(snapshot=snapshot), content_type="application/gzip"
    )
    name = f"{snapshot.stage.campaign.name}-{snapshot.stage.name}-config-{snapshot.sha256[:12]}"
    response["Content-Disposition"] = f'attachment; filename="{name}.tar.gz"'
    return response
