"""Middleware that keeps failures honest: a database outage is a 503 with
Retry-After (the client retries and nothing half-written was acknowledged),
never a 500; and request metrics for /metrics."""

import time

from django.db import InterfaceError, OperationalError, connection
from django.http import HttpResponse, JsonResponse

from prodmon import metrics

API_PREFIXES = ("/api/", "/loki/")
DB_RETRY_AFTER_S = 5


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not _is_outage(exception):
            return None
        metrics.db_unavailable()
        if request.path.startswith(API_PREFIXES):
            response = JsonResponse(
                {
                    "error": "unavailable",
                    "message": "the database is unavailable; nothing was stored, retry later",
                    "retry_after_s": DB_RETRY_AFTER_S,
                },
                status=503,
            )
        else:
            response = HttpResponse(
                "prodmon's database is unavailable; try again in a few seconds.",
                status=503,
                content_type="text/plain",
            )
        response["Retry-After"] = str(DB_RETRY_AFTER_S)
        return response


def _is_outage(exc: Exception) -> bool:
    """A lost or refused database connection, or a locked SQLite file: retryable.

    SQLite also raises OperationalError for schema bugs ("no such column");
    those stay 500s, loudly."""
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    if connection.vendor == "sqlite":
        text = str(exc).lower()
        return "locked" in text or "unable to open" in text or "disk i/o" in text
    return True


class RequestMetricsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        start = time.perf_counter()
        response = self.get_response(request)
        metrics.observe_request(request.path, response.status_code, time.perf_counter() - start)
        return response
