"""Production settings: PostgreSQL, a real broker, secrets from the environment.

Anything missing is a start-up error (ImproperlyConfigured), never a silent
fallback to the embedded behaviour.
"""

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import env, ingest_mode

DEBUG = False


def _required(name: str) -> str:
    value = env.str(name, default="")
    if not value:
        raise ImproperlyConfigured(f"{name} must be set in production")
    return value


def _secret_key() -> str:
    key_file = env.str("DJANGO_SECRET_KEY_FILE", default="")
    if key_file:
        try:
            key = Path(key_file).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"DJANGO_SECRET_KEY_FILE {key_file!r}: {exc}") from exc
    else:
        key = env.str("DJANGO_SECRET_KEY", default="")
    if len(key) < 32:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY or DJANGO_SECRET_KEY_FILE must give a secret of 32+ characters"
        )
    return key


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = [h for h in _required("DJANGO_ALLOWED_HOSTS").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

DATABASES = {"default": env.db_url_config(_required("DATABASE_URL"))}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
# A health check is a `SELECT 1` round trip at the start of every request that
# reuses a connection: a fifth of an ingest request's database work. Off by
# default: after a PostgreSQL restart each stale connection fails one request
# instead (answered 503 with Retry-After, and the connection is replaced), which
# the reporters retry; bench/faults.py checks nothing is lost that way.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("DATABASE_CONN_HEALTH_CHECKS", default=False)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Server-side binding (opt-in) lets psycopg prepare the statements a
    # connection repeats, so PostgreSQL plans the ingest path's once per
    # connection. Off by default: with it a query can carry at most 65,535
    # parameters, and `pk__in=` lists of a bulk action over a large error
    # class exceed that (client-side binding has no such limit). It also
    # needs a pooler that keeps prepared statements (not PgBouncer < 1.21 in
    # transaction mode).
    DATABASES["default"].setdefault("OPTIONS", {})["server_side_binding"] = env.bool(
        "DATABASE_SERVER_SIDE_BINDING", default=False
    )

CELERY_BROKER_URL = _required("CELERY_BROKER_URL")

# Production queues ingest events and applies them with `manage.py ingest_drain`
# (deploy/systemd/prodmon-ingest-drain.service); see base.py.
PRODMON_INGEST_MODE = ingest_mode("queued")

if env.str("PRODMON_LOG_INDEX", default="database") == "elasticsearch":
    _required("ELASTICSEARCH_URL")
CELERY_TASK_ALWAYS_EAGER = False
CELERY_RESULT_BACKEND = None

CACHES = {
    "default": {
        "BACKEND": "prodmon.cache.PooledRedisCache",
        "LOCATION": env.str("REDIS_CACHE_URL", default="")
        or (
            CELERY_BROKER_URL
            if CELERY_BROKER_URL.startswith("redis")
            else "redis://127.0.0.1:6379/1"
        ),
    }
}

LOGGING["handlers"]["console"]["formatter"] = env.str(  # noqa: F405
    "PRODMON_LOG_FORMAT", default="json"
)

SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
