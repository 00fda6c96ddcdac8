"""Ingestion API (/api/v1/ingest/…). Thin: validate, call one service, answer."""

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from logserver import services
from logserver.auth import HasIngestScope
from logserver.errors import error_response, validation_payload
from logserver.serializers import SERIALIZERS, BulkSerializer
from logserver.throttles import IngestRateThrottle
from prodmon.services import IdentityError

ResultSerializer = inline_serializer(
    "IngestResult",
    {
        "event_id": serializers.CharField(),
        "status": serializers.ChoiceField(choices=["accepted", "duplicate", "rejected"]),
        "attempt": serializers.UUIDField(required=False),
        "attempt_number": serializers.IntegerField(required=False),
        "note": serializers.CharField(required=False),
        "error": serializers.CharField(required=False),
        "message": serializers.CharField(required=False),
    },
)


def _result(outcome: services.IngestOutcome) -> dict:
    body = {"event_id": outcome.event_id, "status": outcome.status}
    if outcome.attempt is not None:
        body["attempt"] = str(outcome.attempt.uid)
        body["attempt_number"] = outcome.attempt.number
    if outcome.note:
        body["note"] = outcome.note
    return body


def _identity_error(exc: IdentityError) -> dict:
    return {
        "error": "conflict" if exc.status == 409 else "not_found",
        "message": exc.message,
        "fields": {exc.field: [exc.message]},
    }


class _IngestView(APIView):
    permission_classes = [HasIngestScope]
    throttle_classes = [IngestRateThrottle]
    kind = ""

    def post(self, request):
        serializer = SERIALIZERS[self.kind](data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            outcome = services.event_ingest(
                token=request.auth, kind=self.kind, data=serializer.validated_data
            )
        except IdentityError as exc:
            return Response(_identity_error(exc), status=exc.status)
        code = status.HTTP_201_CREATED if outcome.status == "accepted" else status.HTTP_200_OK
        return Response(_result(outcome), status=code)


@extend_schema(
    request=SERIALIZERS["start"], responses={201: ResultSerializer, 200: ResultSerializer}
)
class StartApi(_IngestView):
    """An attempt started on a worker node."""

    kind = "start"


@extend_schema(
    request=SERIALIZERS["heartbeat"], responses={201: ResultSerializer, 200: ResultSerializer}
)
class HeartbeatApi(_IngestView):
    """Metrics and the next piece of the log tail of a running attempt."""

    kind = "heartbeat"


@extend_schema(request=SERIALIZERS["end"], responses={201: ResultSerializer, 200: ResultSerializer})
class EndApi(_IngestView):
    """An attempt ended: exit code or signal, metrics, outputs."""

    kind = "end"


class BulkApi(APIView):
    """Many events in one request, answered per event and in order.

    Each event is applied in its own transaction: one bad event is rejected
    without affecting the others."""

    permission_classes = [HasIngestScope]
    throttle_classes = [IngestRateThrottle]

    @extend_schema(
        request=BulkSerializer,
        responses={
            200: inline_serializer(
                "BulkResult",
                {
                    "accepted": serializers.IntegerField(),
                    "duplicate": serializers.IntegerField(),
                    "rejected": serializers.IntegerField(),
                    "results": ResultSerializer.__class__(many=True),
                },
            ),
            413: OpenApiResponse(description="too many events in one request"),
        },
    )
    def post(self, request):
        events = request.data.get("events") if isinstance(request.data, dict) else None
        if isinstance(events, list) and len(events) > settings.INGEST_MAX_BULK_EVENTS:
            return error_response(
                "payload_too_large",
                f"{len(events)} events exceed the limit of {settings.INGEST_MAX_BULK_EVENTS} "
                "per bulk request",
                status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            )
        envelope = BulkSerializer(data=request.data)
        envelope.is_valid(raise_exception=True)
        results = [self._one(request.auth, event) for event in envelope.validated_data["events"]]
        totals = {
            k: sum(r["status"] == k for r in results) for k in ("accepted", "duplicate", "rejected")
        }
        return Response({**totals, "results": results})

    @staticmethod
    def _one(token, event: dict) -> dict:
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        kind = event.get("type")
        if kind not in SERIALIZERS:
            return {
                "event_id": event_id,
                "status": "rejected",
                "error": "invalid",
                "message": "type: must be one of start, heartbeat, end",
                "fields": {"type": ["must be one of start, heartbeat, end"]},
            }
        serializer = SERIALIZERS[kind](data=event)
        if not serializer.is_valid():
            return {
                "event_id": event_id,
                "status": "rejected",
                **validation_payload(serializer.errors),
            }
        try:
            outcome = services.event_ingest(token=token, kind=kind, data=serializer.validated_data)
        except IdentityError as exc:
            return {"event_id": event_id, "status": "rejected", **_identity_error(exc)}
        return _result(outcome)
