"""Progress API: a stage's expected inputs (declare and read), completeness,
resource advice, and a campaign's progress with its ETAs.

Declaring needs an ingest token with the `ingest` scope for the stage's
experiment, or a logged-in production manager of it. Reading needs a token
with the `read` scope or membership. Anything outside the caller's
experiments is a 404.
"""

from django.conf import settings
from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import parsers, serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from logserver.models import IngestToken
from logserver.parsers import BoundedJSONParser, decode_body
from prodmon import selectors as production
from prodmon.api import caller_experiment_ids
from prodmon.models import InputSnapshot, Role
from prodmon.progress import selectors as progress
from prodmon.progress import services
from prodmon.progress.completeness import current_snapshot, expected_input_names


class PlainTextParser(parsers.BaseParser):
    """text/plain: one file name per line."""

    media_type = "text/plain"

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        encoding = request.META.get("HTTP_CONTENT_ENCODING", "") if request is not None else ""
        data = decode_body(stream.read(), encoding, settings.INGEST_MAX_BODY_BYTES)
        try:
            return {"text": data.decode("utf-8")}
        except UnicodeDecodeError as exc:
            raise parsers.ParseError("the body is not UTF-8 text") from exc


def _stage_for(request, pk: int, *, scope: str = "read"):
    """The stage, if the caller may see it: a token's own experiment (with the
    scope asked for) or a member's experiments."""
    if isinstance(request.auth, IngestToken):
        if not request.auth.has_scope(scope):
            raise PermissionDenied(f"this token lacks the '{scope}' scope")
        experiment_ids = {request.auth.experiment_id}
    else:
        experiment_ids = caller_experiment_ids(request)
    stage = progress.stage_get(pk=pk, experiment_ids=experiment_ids)
    if stage is None:
        raise NotFound("no such stage in your experiments")
    return stage


def _check_can_declare(request, stage) -> None:
    if isinstance(request.auth, IngestToken):
        return  # _stage_for checked the 'ingest' scope and the experiment
    role = production.user_role(user=request.user, experiment_id=stage.campaign.experiment_id)
    if role is None or role < Role.MANAGER:
        raise PermissionDenied("only a production manager declares a stage's expected inputs")


def _snapshot_dict(snapshot: InputSnapshot | None) -> dict | None:
    if snapshot is None:
        return None
    return {
        "id": snapshot.pk,
        "files": snapshot.file_count,
        "sha256": snapshot.sha256,
        "source": snapshot.source,
        "declared_by": snapshot.declared_by_label,
        "declared_at": snapshot.declared_at.isoformat(),
        "note": snapshot.note,
    }


class ExpectedInputsApi(APIView):
    """GET the stage's current expected inputs; POST a new list.

    POST bodies: JSON `{"files": ["a.root", {"name": "b.root", "run": 5, "subrun": 2}],
    "note": "..."}` or text/plain with one name per line.
    """

    parser_classes = [BoundedJSONParser, PlainTextParser]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "ui"

    class InputSerializer(serializers.Serializer):
        files = serializers.ListField(child=serializers.JSONField(), allow_empty=False)
        note = serializers.CharField(required=False, allow_blank=True, max_length=200)

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, pk):
        stage = _stage_for(request, pk)
        snapshot = current_snapshot(stage_id=stage.pk)
        return Response(
            {
                "stage": stage.pk,
                "snapshot": _snapshot_dict(snapshot),
                "files": expected_input_names(snapshot=snapshot) if snapshot else [],
            }
        )

    @extend_schema(request=InputSerializer, responses={201: OpenApiTypes.OBJECT})
    def post(self, request, pk):
        stage = _stage_for(request, pk, scope="ingest")
        _check_can_declare(request, stage)
        if "text" in request.data and isinstance(request.data, dict) and len(request.data) == 1:
            items = services.parse_input_list(request.data["text"])
            note = ""
        else:
            data = self.InputSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            items = data.validated_data["files"]
            note = data.validated_data.get("note", "")
        try:
            with transaction.atomic():
                snapshot = services.stage_inputs_declare(
                    stage=stage,
                    items=items,
                    source=InputSnapshot.Source.API,
                    actor=request.user,
                    note=note,
                )
        except services.InputListError as exc:
            raise ValidationError({"files": [str(exc)]}) from exc
        return Response(
            {"stage": stage.pk, "snapshot": _snapshot_dict(snapshot)},
            status=status.HTTP_201_CREATED,
        )


class StageCompletenessApi(APIView):
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "ui"

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, pk):
        stage = _stage_for(request, pk)
        c = progress.stage_completeness(stage_id=stage.pk)
        merge = progress.stage_merge_check(stage_id=stage.pk)
        return Response(
            {
                "stage": stage.pk,
                "snapshot": _snapshot_dict(c.snapshot),
                "expected": c.expected,
                "covered": c.covered,
                "missing": c.missing,
                "duplicates": [
                    {"input": d.name, "attempts": d.attempts, "outputs": d.outputs}
                    for d in c.duplicates
                ],
                "unexpected_parents": c.unexpected_parents,
                "merge_check": {
                    "source": merge.source,
                    "checked": merge.checked,
                    "ok": merge.ok,
                    "gaps": [
                        {"run": g.run, "first_subrun": g.first, "last_subrun": g.last}
                        for g in merge.gaps
                    ],
                    "out_of_order": [
                        {"position": o.position, "input": o.name, "after": o.after}
                        for o in merge.out_of_order
                    ],
                    "repeated": merge.repeated,
                    "unparsed": merge.unparsed,
                },
            }
        )


class StageResourcesApi(APIView):
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "ui"

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, pk):
        stage = _stage_for(request, pk)
        return Response(progress.stage_resource_suggestion(stage.pk).as_dict())


class CampaignProgressApi(APIView):
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "ui"

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, pk):
        campaign = production.campaign_get(pk=pk, experiment_ids=caller_experiment_ids(request))
        if campaign is None:
            raise NotFound("no such campaign in your experiments")
        stages = production.campaign_progress(campaigns=[campaign])[campaign.pk]
        estimate = progress.campaign_estimate(campaign=campaign)
        return Response(
            {
                "campaign": campaign.pk,
                "name": campaign.name,
                "computed_at": estimate.computed_at.isoformat(),
                "eta": estimate.campaign.as_dict(),
                "stages": [
                    {
                        "id": p.stage.pk,
                        "name": p.stage.name,
                        "depends_on": [d.pk for d in p.stage.depends_on.all()],
                        "counts": p.counts,
                        "expected": p.expected,
                        "percent_complete": round(p.pct_complete, 3),
                        "completion_target_pct": p.stage.completion_pct,
                        "eta": estimate.stages[p.stage.pk].as_dict(),
                    }
                    for p in stages
                ],
            }
        )
