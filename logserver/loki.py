"""A Loki-compatible push endpoint: POST /loki/api/v1/push with Loki's JSON body

    {"streams": [{"stream": {"<label>": "<value>", …},
                  "values": [["<unix epoch ns>", "<line>"], …]}]}

Each stream's labels name one attempt; its lines are appended to that
attempt's log at offsets the server assigns (the attempt's current end). An
identical re-sent stream (same labels, same entries) is recognised by a hash
claimed in IngestEvent and not appended twice.

Labels, first match wins (prodmon_* first, because log shippers often set
their own `job` label):
- attempt (required): prodmon_attempt, attempt, attempt_uid — the attempt uid
- campaign: prodmon_campaign, campaign
- stage: prodmon_stage, stage
- job: prodmon_job, job_key, job — the job key
- host (optional): prodmon_host, host, hostname — the worker node
- site (optional): prodmon_site, site

A known attempt: campaign, stage and job are optional; when given they must
match it. An attempt not seen yet (a shipper such as Promtail or Grafana Alloy
knows only its labels; the start event may come later or never) is created
from the labels, in the token's experiment, the way a heartbeat without a
start creates one: campaign, stage and job are then required (400 naming the
missing label), the campaign and stage must exist (404 naming the label), and
the job is created if new. With a host label it is recorded as started on
that node. Other labels (filename, …) are accepted and ignored.

A push is one transaction: every stream is resolved (and its attempt created)
and appended, or, on any error, nothing is kept and the answer names the
label at fault. So a 204 means every line is stored, a 4xx that none is.
"""

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from logserver.models import IngestToken
from logserver.services import _event_claim, log_chunk_store
from prodmon import services as production
from prodmon.models import Attempt, Experiment

LABELS = {
    "attempt": ("prodmon_attempt", "attempt", "attempt_uid"),
    "campaign": ("prodmon_campaign", "campaign"),
    "stage": ("prodmon_stage", "stage"),
    "job": ("prodmon_job", "job_key", "job"),
    "host": ("prodmon_host", "host", "hostname"),
    "site": ("prodmon_site", "site"),
}
CREATE_NEEDS = ("campaign", "stage", "job")
MAX_NS = 253402300799 * 10**9  # 9999-12-31


class LokiError(Exception):
    def __init__(self, field: str, message: str, status: int = 400):
        super().__init__(message)
        self.field = field
        self.message = message
        self.status = status


@dataclass(frozen=True)
class LokiStream:
    labels: dict[str, str]
    entries: list[tuple[int, str]]


@dataclass(frozen=True)
class LokiPushOutcome:
    streams: int
    duplicates: int
    lines: int


def _timestamp(value, where: str) -> int:
    if isinstance(value, str) and value.isdigit():
        ns = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        ns = value
    else:
        raise LokiError(where, f"{where}: the timestamp must be a string of Unix epoch nanoseconds")
    if not 0 <= ns <= MAX_NS:
        raise LokiError(where, f"{where}: timestamp {ns} is out of range")
    return ns


def loki_parse(data) -> list[LokiStream]:
    """Validate a decoded Loki JSON push body. Raises LokiError naming the field."""
    if not isinstance(data, dict) or not isinstance(data.get("streams"), list):
        raise LokiError("streams", 'the body must be {"streams": [{"stream": {…}, "values": […]}]}')
    streams = []
    for i, item in enumerate(data["streams"]):
        where = f"streams[{i}]"
        if not isinstance(item, dict):
            raise LokiError(where, f"{where} must be an object")
        labels = item.get("stream")
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            raise LokiError(f"{where}.stream", f"{where}.stream must map label names to strings")
        values = item.get("values", [])
        if not isinstance(values, list):
            raise LokiError(f"{where}.values", f"{where}.values must be a list")
        entries = []
        for j, value in enumerate(values):
            at = f"{where}.values[{j}]"
            # A third element (structured metadata) is accepted and ignored.
            if not isinstance(value, list) or len(value) not in (2, 3):
                raise LokiError(at, f'{at} must be ["<unix ns>", "<line>"]')
            if not isinstance(value[1], str):
                raise LokiError(at, f"{at}: the line must be a string")
            entries.append((_timestamp(value[0], at), value[1]))
        streams.append(LokiStream(labels=labels, entries=entries))
    return streams


def _label(labels: dict[str, str], name: str) -> tuple[str, str] | None:
    for key in LABELS[name]:
        if key in labels:
            return key, labels[key]
    return None


def _first_time(entries: list[tuple[int, str]]) -> dt.datetime:
    ns = min((ns for ns, _ in entries), default=None)
    if ns is None:
        return dt.datetime.now(tz=dt.UTC)
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC)


def _attempt_create(
    *, experiment: Experiment, labels: dict[str, str], key: str, uid: uuid.UUID, at: dt.datetime
) -> Attempt:
    """An unseen attempt, created from its stream labels (see the module docstring)."""
    names: dict[str, str] = {}
    used: dict[str, str] = {}
    for name in CREATE_NEEDS:
        found = _label(labels, name)
        if found is None or not found[1].strip():
            raise LokiError(
                LABELS[name][0],
                f"label {LABELS[name][0]} (or {', '.join(LABELS[name][1:])}) is missing: "
                f"attempt {uid} is not known yet, so the stream must name its campaign, "
                "stage and job to create it",
            )
        used[name], names[name] = found
    identity = production.AttemptIdentity(
        campaign=names["campaign"], stage=names["stage"], job=names["job"], attempt=uid
    )
    host = _label(labels, "host")
    site = _label(labels, "site")
    try:
        if host is not None and host[1].strip():
            attempt = production.attempt_record_start(
                experiment=experiment,
                identity=identity,
                at=at,
                hostname=host[1].strip(),
                site=site[1] if site else "",
            )
        else:
            attempt = production.attempt_record_heartbeat(
                experiment=experiment, identity=identity, at=at, metrics=production.Metrics()
            )
    except production.IdentityError as exc:
        label = used.get(exc.field, key if exc.field == "attempt" else exc.field)
        raise LokiError(label, f"label {label}: {exc.message}", status=exc.status) from exc
    return attempt


def loki_attempt_resolve(
    *, experiment: Experiment, labels: dict[str, str], at: dt.datetime | None = None
) -> Attempt:
    """The attempt a stream names, created from its labels when not seen yet."""
    found = _label(labels, "attempt")
    if found is None:
        raise LokiError(
            "attempt",
            "stream has no attempt label: set `attempt` (or prodmon_attempt, attempt_uid) "
            "to the attempt uid",
        )
    key, value = found
    try:
        uid = uuid.UUID(value)
    except ValueError as exc:
        raise LokiError(key, f"label {key}: {value!r} is not an attempt uid") from exc
    attempt = (
        Attempt.objects.select_related("job__stage__campaign")
        .filter(uid=uid, job__stage__campaign__experiment=experiment)
        .first()
    )
    if attempt is None:
        return _attempt_create(
            experiment=experiment,
            labels=labels,
            key=key,
            uid=uid,
            at=at or dt.datetime.now(tz=dt.UTC),
        )
    job = attempt.job
    actual = {"campaign": job.stage.campaign.name, "stage": job.stage.name, "job": job.key}
    for name, expected in actual.items():
        found = _label(labels, name)
        if found is not None and found[1] != expected:
            raise LokiError(
                found[0],
                f"label {found[0]}: attempt {uid} belongs to {name} {expected!r}, not {found[1]!r}",
                status=409,
            )
    return attempt


def _stream_digest(stream: LokiStream) -> str:
    blob = json.dumps(
        [sorted(stream.labels.items()), stream.entries], separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


def _packed(entries: list[tuple[int, str]], limit: int) -> Iterator[tuple[bytes, dt.datetime]]:
    """Lines joined into chunks of at most `limit` bytes, each with the time of
    its first line. A line gets a newline unless it has one."""
    buf = bytearray()
    first: dt.datetime | None = None
    for ns, line in entries:
        at = dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC)
        data = line.encode("utf-8", "replace")
        if not data.endswith(b"\n"):
            data += b"\n"
        if buf and len(buf) + len(data) > limit:
            yield bytes(buf), first
            buf.clear()
            first = None
        while len(data) > limit:
            yield data[:limit], at
            data = data[limit:]
        if first is None:
            first = at
        buf += data
    if buf:
        yield bytes(buf), first


def _append(*, experiment: Experiment, attempt: Attempt, stream: LokiStream) -> tuple[bool, int]:
    event_id = f"loki-{_stream_digest(stream)[:59]}"
    with transaction.atomic():
        locked = Attempt.objects.select_for_update().get(pk=attempt.pk)
        if not _event_claim(
            experiment_id=experiment.pk, event_id=event_id, kind="loki", attempt_id=locked.pk
        ):
            return False, 0
        offset = locked.log_bytes
        for data, at in _packed(stream.entries, settings.INGEST_MAX_CHUNK_BYTES):
            log_chunk_store(attempt=locked, offset=offset, data=data, logged_at=at)
            offset += len(data)
        Attempt.objects.filter(pk=locked.pk).update(log_bytes=offset)
    return True, len(stream.entries)


def loki_push(*, token: IngestToken, streams: list[LokiStream]) -> LokiPushOutcome:
    """Append every stream to its attempt's log, creating unseen attempts from
    their labels. One transaction: a bad label anywhere refuses the whole push
    and nothing of it is kept (no attempt created, no line stored)."""
    experiment = token.experiment
    applied = duplicates = lines = 0
    with transaction.atomic():
        resolved = [
            (
                stream,
                loki_attempt_resolve(
                    experiment=experiment,
                    labels=stream.labels,
                    at=_first_time(stream.entries),
                ),
            )
            for stream in streams
            if stream.entries
        ]
        for stream, attempt in resolved:
            new, count = _append(experiment=experiment, attempt=attempt, stream=stream)
            if new:
                applied += 1
                lines += count
            else:
                duplicates += 1
    return LokiPushOutcome(streams=applied, duplicates=duplicates, lines=lines)
