"""The embedded default: runs on one machine with no services at all.

- SQLite under var/ unless DATABASE_URL says otherwise.
- Celery tasks run in-process (CELERY_TASK_ALWAYS_EAGER) unless
  CELERY_BROKER_URL is set. This is a deliberate, documented choice for the
  embedded mode only; production settings refuse to start without a broker.
- The log index lives in the database.

Never use these settings on a public network: DEBUG may be on and the secret
key is generated per checkout.
"""

import secrets

from .base import *  # noqa: F403
from .base import VAR_DIR, env

VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env.bool("DJANGO_DEBUG", default=False)


def _local_secret_key() -> str:
    # A per-checkout key kept under var/, so sessions survive restarts
    # without a secret ever living in the repository.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="") or _local_secret_key()
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'prodmon.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server read while the ingest path writes.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
else:
    # The same PostgreSQL options as production (see there), so the test
    # suite's PostgreSQL pass runs every query the way production does.
    DATABASES["default"].setdefault("OPTIONS", {})["server_side_binding"] = env.bool(
        "DATABASE_SERVER_SIDE_BINDING", default=False
    )

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
# Embedded mode: no broker configured means tasks run in-process, on purpose.
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
if not CELERY_BROKER_URL:
    CELERY_BROKER_URL = "memory://"
CELERY_RESULT_BACKEND = None
# No beat either: the progress sweep (notification retries, missed "done"
# checks) runs on a thread each serving process starts at its first request,
# one sweep at a time on the machine (prodmon/progress/runner.py). 0: off.
PRODMON_EMBEDDED_SWEEP_SECONDS = env.int("PRODMON_EMBEDDED_SWEEP_SECONDS", default=60)
if CELERY_TASK_ALWAYS_EAGER:
    MIDDLEWARE = [*MIDDLEWARE, "prodmon.progress.runner.EmbeddedSweepMiddleware"]  # noqa: F405

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
if env.str("REDIS_CACHE_URL", default=""):
    CACHES["default"] = {
        "BACKEND": "prodmon.cache.PooledRedisCache",
        "LOCATION": env.str("REDIS_CACHE_URL"),
    }
