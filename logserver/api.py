"""Log server API: ingestion (/api/v1/ingest/…), full-log upload and download,
log search, and the Loki push endpoint. Thin: validate, call one service or
selector, answer."""

import json

from django.conf import settings
from django.db import transaction
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import AuthenticationFailed, NotFound, ParseError, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from logserver import fulllog, loki, services
from logserver import queue as ingest_queue
from logserver import selectors as log_selectors
from logserver.auth import (
    HasIngestScope,
    IngestTokenAuthentication,
    IngestTokenBasicAuthentication,
    caller_experiment_ids,
    token_authenticate,
)
from logserver.errors import PayloadTooLarge, error_response, validation_payload
from logserver.models import TOKEN_PREFIX, LogLevel
from logserver.parsers import decode_body, parse_json_bytes
from logserver.serializers import SERIALIZERS, BulkSerializer, event_validate
from logserver.throttles import IngestRateThrottle, ingest_admit
from logserver.views import log_download_response
from prodmon import selectors as production_selectors
from prodmon.services import IdentityError

ResultSerializer = inline_serializer(
    "IngestResult",
    {
        "event_id": serializers.CharField(),
        "status": serializers.ChoiceField(choices=["accepted", "duplicate", "rejected"]),
        "attempt": serializers.UUIDField(required=False),
        "attempt_number": serializers.IntegerField(required=False),
        "note": serializers.CharField(required=False),
        "queued": serializers.BooleanField(
            required=False, help_text="stored, to be applied shortly (PRODMON_INGEST_MODE=queued)"
        ),
        "error": serializers.CharField(required=False),
        "message": serializers.CharField(required=False),
    },
)


def _result(outcome: services.IngestOutcome, *, queued: bool = False) -> dict:
    body = {"event_id": outcome.event_id, "status": outcome.status}
    if queued and outcome.status == "accepted":
        body["queued"] = True
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
        serializer = event_validate(self.kind, request.data)
        if serializer.errors:
            raise ValidationError(serializer.errors)
        if ingest_queue.queued_mode():
            (outcome,) = ingest_queue.events_enqueue(
                token=request.auth, events=[(self.kind, serializer.validated_data)]
            )
            code = status.HTTP_202_ACCEPTED if outcome.status == "accepted" else status.HTTP_200_OK
            return Response(_result(outcome, queued=True), status=code)
        try:
            outcome = services.event_ingest(
                token=request.auth, kind=self.kind, data=serializer.validated_data
            )
        except IdentityError as exc:
            return Response(_identity_error(exc), status=exc.status)
        code = status.HTTP_201_CREATED if outcome.status == "accepted" else status.HTTP_200_OK
        return Response(_result(outcome), status=code)


@extend_schema(
    request=SERIALIZERS["start"],
    responses={201: ResultSerializer, 202: ResultSerializer, 200: ResultSerializer},
)
class StartApi(_IngestView):
    """An attempt started on a worker node."""

    kind = "start"


@extend_schema(
    request=SERIALIZERS["heartbeat"],
    responses={201: ResultSerializer, 202: ResultSerializer, 200: ResultSerializer},
)
class HeartbeatApi(_IngestView):
    """Metrics and the next piece of the log tail of a running attempt."""

    kind = "heartbeat"


@extend_schema(
    request=SERIALIZERS["end"],
    responses={201: ResultSerializer, 202: ResultSerializer, 200: ResultSerializer},
)
class EndApi(_IngestView):
    """An attempt ended: exit code or signal, metrics, outputs."""

    kind = "end"


def queued_fast_path(kind: str, drf_view):
    """The queued mode's answer to a well-formed event, without DRF's request
    machinery (content negotiation, request and response wrapping, renderer):
    about a sixth of a single-event request's CPU. Exactly the same checks
    run, in the same order: token (cached per process), ingest scope, rate
    limits, JSON body, the event's serializer. Anything that does not pass,
    or a request this path does not handle (gzip, another content type, the
    inline mode), goes to the DRF view, which answers it as always: every
    error keeps its one format and status."""

    @csrf_exempt
    def view(request, *args, **kwargs):
        if (
            request.method != "POST"
            or not ingest_queue.queued_mode()
            or request.content_type != "application/json"
            or (request.encoding or "utf-8").lower() != "utf-8"
            or request.META.get("HTTP_CONTENT_ENCODING")
            or int(request.META.get("CONTENT_LENGTH") or 0) > settings.INGEST_MAX_BODY_BYTES
        ):
            return drf_view(request, *args, **kwargs)
        header = request.META.get("HTTP_AUTHORIZATION", "").split()
        if len(header) != 2 or header[0] != "Bearer" or not header[1].startswith(TOKEN_PREFIX):
            return drf_view(request, *args, **kwargs)
        try:
            _, token = token_authenticate(header[1])
        except AuthenticationFailed:
            return drf_view(request, *args, **kwargs)
        if not token.has_scope("ingest") or not ingest_admit(token=token, weight=1):
            # A refusal is DRF's to write (a throttled request is counted
            # again there; its window is full either way).
            return drf_view(request, *args, **kwargs)
        try:
            data = parse_json_bytes(request.body)
        except ParseError:
            return drf_view(request, *args, **kwargs)
        serializer = event_validate(kind, data)
        if serializer.errors:
            return drf_view(request, *args, **kwargs)
        (outcome,) = ingest_queue.events_enqueue(
            token=token, events=[(kind, serializer.validated_data)]
        )
        code = status.HTTP_202_ACCEPTED if outcome.status == "accepted" else status.HTTP_200_OK
        return HttpResponse(
            json.dumps(_result(outcome, queued=True)), status=code, content_type="application/json"
        )

    view.cls = getattr(drf_view, "cls", None)  # drf-spectacular finds the schema here
    view.initkwargs = getattr(drf_view, "initkwargs", {})
    return view


class BulkApi(APIView):
    """Many events in one request, answered per event and in order.

    Each event is applied in its own savepoint, so one bad event is rejected
    without affecting the others, and the request commits once: one WAL flush
    per request, not per event. If that commit fails, the request fails as a
    whole (503) and nothing of it was stored, so the client's re-send loses
    nothing and duplicates nothing. In the queued mode every event is still
    validated here; the valid ones are queued with one INSERT."""

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
        if ingest_queue.queued_mode():
            results = self._queue(request.auth, envelope.validated_data["events"])
        else:
            with transaction.atomic():
                results = [self._one(request.auth, e) for e in envelope.validated_data["events"]]
        totals = {
            k: sum(r["status"] == k for r in results) for k in ("accepted", "duplicate", "rejected")
        }
        return Response({**totals, "results": results})

    @classmethod
    def _queue(cls, token, events: list[dict]) -> list[dict]:
        """Validate every event; queue the valid ones with one INSERT."""
        results: list = []
        valid: list[tuple[int, str, dict]] = []
        for event in events:
            checked = cls._check(event)
            if isinstance(checked, dict):
                results.append(checked)
            else:
                valid.append((len(results), *checked))
                results.append(None)
        outcomes = ingest_queue.events_enqueue(
            token=token, events=[(kind, data) for _, kind, data in valid]
        )
        for (i, _, _), outcome in zip(valid, outcomes, strict=True):
            results[i] = _result(outcome, queued=True)
        return results

    @staticmethod
    def _check(event: dict) -> dict | tuple[str, dict]:
        """(kind, validated data), or the rejection of an invalid event."""
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
        serializer = event_validate(kind, event)
        if serializer.errors:
            return {
                "event_id": event_id,
                "status": "rejected",
                **validation_payload(serializer.errors),
            }
        return kind, serializer.validated_data

    @classmethod
    def _one(cls, token, event: dict) -> dict:
        checked = cls._check(event)
        if isinstance(checked, dict):
            return checked
        kind, data = checked
        try:
            outcome = services.event_ingest(token=token, kind=kind, data=data)
        except IdentityError as exc:
            return {"event_id": data["event_id"], "status": "rejected", **_identity_error(exc)}
        return _result(outcome)


# --- full logs ----------------------------------------------------------------


class AttemptLogApi(APIView):
    """The full log of an attempt: PUT or POST it at the end of the job (ingest
    token; body gzip with `Content-Encoding: gzip`, or plain), GET it back
    (`read` token or a member's session) as text/plain.

    The body is streamed to the file store, never held in memory; the sha256 of
    the uncompressed log is recorded, and checked against `X-Content-SHA256`
    when the client sends it. Uploading again replaces the previous log."""

    parser_classes: list = []

    class OutputSerializer(serializers.Serializer):
        attempt = serializers.UUIDField()
        size = serializers.IntegerField(help_text="bytes of the uncompressed log")
        stored_bytes = serializers.IntegerField(help_text="bytes kept, gzip-compressed")
        sha256 = serializers.CharField()
        uploaded_at = serializers.DateTimeField()

    def get_permissions(self):
        if self.request.method in ("PUT", "POST"):
            return [HasIngestScope()]
        return super().get_permissions()

    def get_throttles(self):
        if self.request.method in ("PUT", "POST"):
            return [IngestRateThrottle()]
        return []

    @extend_schema(
        request={"application/octet-stream": bytes, "text/plain": bytes},
        responses={
            201: OutputSerializer,
            404: OpenApiResponse(description="no such attempt in the token's experiment"),
            413: OpenApiResponse(description="the log exceeds LOGSTORE_MAX_BYTES"),
            422: OpenApiResponse(description="X-Content-SHA256 does not match"),
        },
    )
    def put(self, request, uid):
        attempt = production_selectors.attempt_get(
            uid=uid, experiment_ids={request.auth.experiment_id}
        )
        if attempt is None:
            return error_response(
                "not_found", f"no attempt {uid} in your experiment", status.HTTP_404_NOT_FOUND
            )
        encoding = request.META.get("HTTP_CONTENT_ENCODING", "").strip().lower()
        ctype = (request.content_type or "").split(";")[0].strip().lower()
        if encoding not in ("", "identity", "gzip"):
            return error_response(
                "unsupported_media_type",
                f"unsupported Content-Encoding {encoding!r}; send gzip or plain bytes",
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            )
        gzipped = encoding == "gzip" or ctype in ("application/gzip", "application/x-gzip")
        try:
            full_log = fulllog.full_log_store(
                attempt=attempt,
                stream=request._request,
                gzipped=gzipped,
                expected_sha256=request.META.get("HTTP_X_CONTENT_SHA256", "").strip(),
            )
        except fulllog.FullLogError as exc:
            code = {413: "payload_too_large", 422: "checksum_mismatch"}.get(exc.status, "invalid")
            return error_response(code, exc.message, exc.status)
        return Response(
            {
                "attempt": str(attempt.uid),
                "size": full_log.size,
                "stored_bytes": full_log.stored_size,
                "sha256": full_log.sha256,
                "uploaded_at": full_log.uploaded_at,
            },
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(
        request={"application/octet-stream": bytes, "text/plain": bytes},
        responses={201: OutputSerializer},
    )
    def post(self, request, uid):
        return self.put(request, uid)

    @extend_schema(
        responses={
            (200, "text/plain"): OpenApiResponse(description="the log as text/plain"),
            404: OpenApiResponse(description="no such attempt in your experiments"),
        }
    )
    def get(self, request, uid):
        attempt = production_selectors.attempt_get(
            uid=uid, experiment_ids=caller_experiment_ids(request)
        )
        if attempt is None:
            raise NotFound("no such attempt in your experiments")
        return log_download_response(attempt=attempt)


# --- search -------------------------------------------------------------------


class LogSearchApi(APIView):
    """Search log lines: words (all must match) and "quoted phrases", within
    the caller's experiments, newest first. Each result links to its line in
    the log viewer."""

    class InputSerializer(serializers.Serializer):
        q = serializers.CharField(max_length=500)
        experiment = serializers.CharField(required=False, allow_blank=True, max_length=64)
        campaign = serializers.CharField(required=False, allow_blank=True, max_length=128)
        stage = serializers.CharField(required=False, allow_blank=True, max_length=128)
        site = serializers.CharField(required=False, allow_blank=True, max_length=128)
        node = serializers.CharField(required=False, allow_blank=True, max_length=255)
        exit_code = serializers.IntegerField(required=False, min_value=-(2**31), max_value=2**31)
        error_class = serializers.CharField(required=False, allow_blank=True, max_length=200)
        since = serializers.DateTimeField(required=False)
        until = serializers.DateTimeField(required=False)
        limit = serializers.IntegerField(required=False, min_value=1, max_value=500, default=50)
        offset = serializers.IntegerField(required=False, min_value=0, max_value=10000, default=0)

    class HitSerializer(serializers.Serializer):
        attempt = serializers.UUIDField(source="attempt.uid")
        attempt_number = serializers.IntegerField(source="attempt.number")
        experiment = serializers.CharField(source="attempt.job.stage.campaign.experiment.name")
        campaign = serializers.CharField(source="attempt.job.stage.campaign.name")
        stage = serializers.CharField(source="attempt.job.stage.name")
        job = serializers.CharField(source="attempt.job.key")
        host = serializers.CharField(source="attempt.node.hostname", default=None)
        site = serializers.CharField(source="attempt.node.site", default=None)
        exit_code = serializers.IntegerField(source="attempt.exit_code")
        line = serializers.IntegerField(source="line_no")
        offset = serializers.IntegerField()
        timestamp = serializers.DateTimeField()
        level = serializers.SerializerMethodField()
        text = serializers.CharField()
        url = serializers.CharField()

        def get_level(self, hit) -> str:
            return LogLevel(hit.level).label

    @extend_schema(
        parameters=[InputSerializer],
        responses={
            200: inline_serializer(
                "LogSearchResult",
                {
                    "results": HitSerializer(many=True),
                    "has_more": serializers.BooleanField(),
                    "next_offset": serializers.IntegerField(allow_null=True),
                },
            )
        },
    )
    def get(self, request):
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        args = dict(params.validated_data)
        limit, offset = args.pop("limit"), args.pop("offset")
        result = log_selectors.log_search(
            experiment_ids=caller_experiment_ids(request),
            text=args.pop("q"),
            limit=limit,
            offset=offset,
            **args,
        )
        hits = self.HitSerializer(result.hits, many=True).data
        for hit, item in zip(hits, result.hits, strict=True):
            hit["url"] = request.build_absolute_uri(item.url)
        return Response(
            {
                "results": hits,
                "has_more": result.has_more,
                "next_offset": offset + limit if result.has_more else None,
            }
        )


# --- Loki push ----------------------------------------------------------------


class LokiPushApi(APIView):
    """Loki's push API (JSON only): lines are appended to the attempt named by
    the stream labels. Bearer or basic auth (token as the password). Answers
    204 like Loki; a re-sent identical stream is not appended twice."""

    authentication_classes = [IngestTokenAuthentication, IngestTokenBasicAuthentication]
    permission_classes = [HasIngestScope]
    throttle_classes = [IngestRateThrottle]
    parser_classes: list = []

    @extend_schema(
        request={
            "application/json": inline_serializer(
                "LokiPush", {"streams": serializers.ListField(child=serializers.DictField())}
            )
        },
        responses={
            204: OpenApiResponse(description="appended (or already appended)"),
            400: OpenApiResponse(description="malformed body or a missing label"),
            404: OpenApiResponse(description="unknown campaign or stage (unseen jobs are created)"),
            409: OpenApiResponse(description="a label does not match the attempt"),
            415: OpenApiResponse(description="protobuf body: send JSON"),
        },
    )
    def post(self, request):
        ctype = (request.META.get("CONTENT_TYPE") or "").split(";")[0].strip().lower()
        if ctype != "application/json" and ctype:
            return error_response(
                "unsupported_media_type",
                f"Content-Type {ctype!r} is not supported: push Loki's JSON format "
                "(Content-Type: application/json, optionally gzip-encoded); "
                "protobuf/snappy bodies are not accepted",
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            )
        limit = settings.INGEST_MAX_BODY_BYTES
        raw = request._request.read(limit + 1)
        if len(raw) > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        body = decode_body(raw, request.META.get("HTTP_CONTENT_ENCODING", ""), limit)
        try:
            streams = loki.loki_parse(parse_json_bytes(body))
            loki.loki_push(token=request.auth, streams=streams)
        except loki.LokiError as exc:
            code = {404: "not_found", 409: "conflict"}.get(exc.status, "invalid")
            return error_response(code, exc.message, exc.status, fields={exc.field: [exc.message]})
        return Response(status=status.HTTP_204_NO_CONTENT)
