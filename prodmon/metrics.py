"""Prometheus metrics, served at /metrics.

Under gunicorn each worker is a process: set PROMETHEUS_MULTIPROC_DIR (the
gunicorn config does) so every worker writes its samples there and /metrics
adds them up.
"""

import os
import re

from django.conf import settings
from django.http import HttpResponse, HttpResponseForbidden
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

INGEST_PATH = re.compile(r"^/api/v1/ingest/(start|heartbeat|end|bulk)/$")

INGEST_REQUESTS = Counter(
    "prodmon_ingest_requests_total", "Ingest requests by kind and HTTP status", ["kind", "status"]
)
INGEST_LATENCY = Histogram(
    "prodmon_ingest_latency_seconds",
    "Server time of ingest requests",
    ["kind"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)
HTTP_ERRORS = Counter(
    "prodmon_http_errors_total", "Responses with status >= 500, by status", ["status"]
)
DB_UNAVAILABLE = Counter(
    "prodmon_db_unavailable_total", "Requests answered 503 because the database was unavailable"
)


def observe_request(path: str, status: int, seconds: float) -> None:
    match = INGEST_PATH.match(path)
    if match:
        kind = match.group(1)
        INGEST_REQUESTS.labels(kind=kind, status=str(status)).inc()
        INGEST_LATENCY.labels(kind=kind).observe(seconds)
    if status >= 500:
        HTTP_ERRORS.labels(status=str(status)).inc()


def db_unavailable() -> None:
    DB_UNAVAILABLE.inc()


def _scrape_gauges(registry: CollectorRegistry) -> None:
    """Values read at scrape time: queue depth and index lag."""
    queue = Gauge(
        "prodmon_celery_queue_depth", "Tasks waiting in the broker queue", registry=registry
    )
    queue.set(_queue_depth())
    lag = Gauge(
        "prodmon_log_index_lag_bytes", "Log bytes stored but not yet indexed", registry=registry
    )
    lag.set(_index_lag())
    try:
        from logserver.queue import queue_stats

        stats = queue_stats()
    except Exception:  # noqa: BLE001 - a scrape must answer even with the database down
        stats = None
    queued = Gauge(
        "prodmon_ingest_queue_depth",
        "Ingest events stored and not yet applied (queued mode)",
        registry=registry,
    )
    queued.set(float("nan") if stats is None else stats.queued)
    oldest = Gauge(
        "prodmon_ingest_queue_oldest_seconds",
        "Age of the oldest queued ingest event; 0 when the queue is empty",
        registry=registry,
    )
    oldest.set(float("nan") if stats is None else stats.oldest_age_s or 0.0)
    rejected = Gauge(
        "prodmon_ingest_rejected_events",
        "Queued ingest events the drain rejected (kept, with the reason)",
        registry=registry,
    )
    rejected.set(float("nan") if stats is None else stats.rejected)


def _queue_depth() -> float:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return 0
    broker = settings.CELERY_BROKER_URL
    if not broker.startswith("redis"):
        return float("nan")  # AMQP depth: read it from RabbitMQ's own exporter
    import redis

    try:
        return float(redis.Redis.from_url(broker, socket_timeout=1).llen("celery"))
    except redis.RedisError:
        return float("nan")


def _index_lag() -> float:
    try:
        from logserver.selectors import index_lag_bytes
    except ImportError:
        return float("nan")
    return float(index_lag_bytes())


def _allowed(request) -> bool:
    token = getattr(settings, "PRODMON_METRICS_TOKEN", "")
    if token:
        return request.headers.get("Authorization", "") == f"Bearer {token}"
    return request.META.get("REMOTE_ADDR") in ("127.0.0.1", "::1")


@require_GET
def metrics_view(request):
    """Prometheus exposition. Needs PRODMON_METRICS_TOKEN as a bearer token when
    set; otherwise only loopback clients (a local Prometheus or node agent)."""
    if not _allowed(request):
        return HttpResponseForbidden("metrics need PRODMON_METRICS_TOKEN or a loopback client\n")
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        from prometheus_client import REGISTRY

        body = generate_latest(REGISTRY)
    extra = CollectorRegistry()
    _scrape_gauges(extra)
    return HttpResponse(body + generate_latest(extra), content_type=CONTENT_TYPE_LATEST)
