"""Liveness and readiness for load balancers and systemd."""

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET


@require_GET
def healthz(request):
    """The process is up and serving. Checks nothing else, on purpose."""
    return JsonResponse({"status": "ok"})


@require_GET
def noop(request):
    """A trivial view answering 204: the floor that bench/ingest.py compares
    the ingest path against under the same gunicorn configuration."""
    return HttpResponse(status=204)


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return "ok"


def _check_broker() -> str:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return "in-process (embedded mode)"
    from prodmon.celery import app

    with app.connection_for_write(url=settings.CELERY_BROKER_URL) as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
    return "ok"


def _check_index() -> str:
    from logserver.index import get_log_index

    return get_log_index().ping()


@require_GET
def readyz(request):
    """Ready to take traffic: the database, the broker and the log index answer."""
    checks, ok = {}, True
    for name, check in (
        ("database", _check_database),
        ("broker", _check_broker),
        ("index", _check_index),
    ):
        try:
            checks[name] = check()
        except Exception as exc:  # noqa: BLE001 - any failure means not ready; say which
            checks[name] = f"error: {type(exc).__name__}: {exc}"
            ok = False
    return JsonResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503
    )
