"""Input shapes of the ingestion API. Every error names its field.

The wire format is documented in README.md ("Ingestion API") and in the
OpenAPI schema served at /api/v1/schema/.
"""

import base64
import binascii
import re
import threading

from django.conf import settings
from rest_framework import serializers

INT64_MAX = 2**63 - 1
EVENT_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{8,64}$")
MAX_NODE_PROPERTIES = 64


def _no_nul(value: str, field: str) -> str:
    if "\x00" in value:
        raise serializers.ValidationError(f"{field} contains a NUL character")
    return value


class NodePropertiesField(serializers.DictField):
    """Flat key -> scalar map describing a worker node (cvmfs, os, cores …)."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if len(value) > MAX_NODE_PROPERTIES:
            raise serializers.ValidationError(f"at most {MAX_NODE_PROPERTIES} properties")
        for key, item in value.items():
            if len(key) > 64:
                raise serializers.ValidationError(f"property name {key[:20]!r}… is over 64 chars")
            _no_nul(key, "a property name")
            if isinstance(item, str):
                if len(item) > 512:
                    raise serializers.ValidationError(f"property {key!r} is over 512 characters")
                _no_nul(item, f"property {key!r}")
            elif item is not None and not isinstance(item, bool | int | float):
                raise serializers.ValidationError(
                    f"property {key!r} must be a string, number, boolean or null"
                )
            elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > INT64_MAX:
                raise serializers.ValidationError(f"property {key!r} is out of range")
        return value


class MetricsSerializer(serializers.Serializer):
    wall_s = serializers.FloatField(required=False, min_value=0, max_value=1e9)
    cpu_s = serializers.FloatField(required=False, min_value=0, max_value=1e11)
    peak_rss_bytes = serializers.IntegerField(required=False, min_value=0, max_value=INT64_MAX)
    disk_bytes = serializers.IntegerField(required=False, min_value=0, max_value=INT64_MAX)
    events_processed = serializers.IntegerField(required=False, min_value=0, max_value=INT64_MAX)


class LogChunkSerializer(serializers.Serializer):
    """A piece of the job's combined stdout/stderr starting at byte `offset`.

    Send `data` (text) when the bytes are valid UTF-8, else `data_b64`.
    """

    offset = serializers.IntegerField(min_value=0, max_value=2**62)
    data = serializers.CharField(
        required=False, allow_blank=True, trim_whitespace=False, max_length=None
    )
    data_b64 = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Log text may carry NULs; it is stored as bytes, so allow them.
        self.fields["data"].validators = []

    def validate(self, attrs):
        has_text, has_b64 = "data" in attrs, "data_b64" in attrs
        if has_text == has_b64:
            raise serializers.ValidationError({"data": "give exactly one of data or data_b64"})
        if has_text:
            try:
                raw = attrs.pop("data").encode("utf-8")
            except UnicodeEncodeError as exc:
                raise serializers.ValidationError(
                    {"data": "contains a lone surrogate; send undecodable bytes as data_b64"}
                ) from exc
        else:
            try:
                raw = base64.b64decode(attrs.pop("data_b64"), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise serializers.ValidationError({"data_b64": "is not valid base64"}) from exc
        limit = settings.INGEST_MAX_CHUNK_BYTES
        if len(raw) > limit:
            raise serializers.ValidationError(
                {"data": f"chunk of {len(raw)} bytes exceeds the limit of {limit} bytes"}
            )
        attrs["bytes"] = raw
        return attrs


class OutputFileSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=1024)
    size = serializers.IntegerField(min_value=0, max_value=INT64_MAX)
    checksum = serializers.RegexField(
        r"^[a-z0-9]{2,16}:[0-9A-Fa-f]{1,128}$",
        required=False,
        allow_blank=True,
        max_length=140,
        error_messages={"invalid": "use <algorithm>:<hex digest>, e.g. adler32:0a1b2c3d"},
    )
    events = serializers.IntegerField(required=False, min_value=0, max_value=INT64_MAX)
    parents = serializers.ListField(
        child=serializers.CharField(max_length=1024), required=False, max_length=10000
    )


class EventSerializer(serializers.Serializer):
    event_id = serializers.RegexField(
        EVENT_ID_RE,
        error_messages={"invalid": "must be 8-64 characters of A-Z a-z 0-9 . _ : -"},
    )
    campaign = serializers.CharField(max_length=128)
    stage = serializers.CharField(max_length=128)
    job = serializers.CharField(max_length=512)
    attempt = serializers.UUIDField()
    time = serializers.DateTimeField(required=False)


class StartEventSerializer(EventSerializer):
    host = serializers.CharField(max_length=255)
    site = serializers.CharField(max_length=128, required=False, allow_blank=True)
    node = NodePropertiesField(required=False)
    cores = serializers.IntegerField(required=False, min_value=1, max_value=4096)
    batch_id = serializers.CharField(max_length=128, required=False, allow_blank=True)


class HeartbeatEventSerializer(EventSerializer):
    metrics = MetricsSerializer(required=False)
    log = LogChunkSerializer(required=False)


class EndEventSerializer(HeartbeatEventSerializer):
    exit_code = serializers.IntegerField(
        required=False, allow_null=True, min_value=-(2**31), max_value=2**31 - 1
    )
    signal = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=64)
    success = serializers.BooleanField(required=False, allow_null=True, default=None)
    outputs = OutputFileSerializer(many=True, required=False, max_length=10000)

    def validate(self, attrs):
        if attrs.get("exit_code") is None and attrs.get("signal") is None:
            raise serializers.ValidationError({"exit_code": "give exit_code or signal"})
        return attrs


SERIALIZERS = {
    "start": StartEventSerializer,
    "heartbeat": HeartbeatEventSerializer,
    "end": EndEventSerializer,
}

_per_thread = threading.local()


def event_validate(kind: str, data) -> serializers.Serializer:
    """Validate one event with the serializer of its kind; check `.errors`.

    A DRF serializer deep-copies all its declared fields when it is built,
    which costs more than the validation itself. Each thread therefore keeps
    one serializer per kind and reruns it on the next event's data (a thread
    validates one event at a time, so nothing is shared between requests).
    """
    cached = _per_thread.__dict__.setdefault("serializers", {})
    serializer = cached.get(kind)
    if serializer is None:
        serializer = cached[kind] = SERIALIZERS[kind](data=data)
    else:
        serializer.initial_data = data
        for attr in ("_validated_data", "_errors", "_data"):
            serializer.__dict__.pop(attr, None)
    serializer.is_valid()
    return serializer


class BulkSerializer(serializers.Serializer):
    """Up to PRODMON_INGEST_MAX_BULK_EVENTS events, each with a `type`.

    Events are validated and applied one by one; the answer has one result
    per event, in order."""

    events = serializers.ListField(child=serializers.DictField(), allow_empty=False)

    def validate_events(self, value):
        limit = settings.INGEST_MAX_BULK_EVENTS
        if len(value) > limit:
            raise serializers.ValidationError(f"at most {limit} events per bulk request")
        return value
