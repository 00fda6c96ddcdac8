"""Settings shared by every configuration.

Values come from environment variables (12-factor). Each one is documented in
README.md and .env.example. The helpers below fail loudly on malformed values
rather than guessing.
"""

import os
import sys
from pathlib import Path

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(environ.Env().str("PRODMON_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_filters",
    "django_tables2",
    "prodmon",
    "logserver",
    "triage",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "prodmon.middleware.RequestMetricsMiddleware",
    "logserver.middleware.BodySizeLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "prodmon.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "prodmon.urls"
WSGI_APPLICATION = "prodmon.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "campaign-list"
LOGOUT_REDIRECT_URL = "login"

# --- ingestion limits -------------------------------------------------------
# One request body, after gzip decoding, may not exceed this (answered 413).
# deploy/nginx keeps client_max_body_size in step with it.
INGEST_MAX_BODY_BYTES = env.int("PRODMON_INGEST_MAX_BODY_BYTES", default=8 * 1024 * 1024)
# One log chunk in one event.
INGEST_MAX_CHUNK_BYTES = env.int("PRODMON_INGEST_MAX_CHUNK_BYTES", default=1024 * 1024)
INGEST_MAX_BULK_EVENTS = env.int("PRODMON_INGEST_MAX_BULK_EVENTS", default=500)
# Events per second the whole deployment admits (all workers, shared through
# the cache); above it, 429 + Retry-After. 0 = no global limit. Set it from
# `python -m bench.ingest` on the production hardware.
PRODMON_INGEST_CAPACITY = env.int("PRODMON_INGEST_CAPACITY", default=0)


# How an accepted event is applied. "inline": in the request's own transaction
# (the answer carries the attempt). "queued": the request validates the event,
# stores it durably in the ingest queue and answers 202; `manage.py ingest_drain`
# (and, as a fallback, beat's logserver.ingest_drain_task) applies queued events
# in batches, in arrival order. Queued carries several times the events per
# second of inline on the same machine; see README "Performance".
def ingest_mode(default: str) -> str:
    mode = env.str("PRODMON_INGEST_MODE", default=default)
    if mode not in ("inline", "queued"):
        raise ImproperlyConfigured(
            f"PRODMON_INGEST_MODE must be 'inline' or 'queued', not {mode!r}"
        )
    return mode


PRODMON_INGEST_MODE = ingest_mode("inline")
# Events applied per drain transaction.
PRODMON_INGEST_DRAIN_BATCH = env.int("PRODMON_INGEST_DRAIN_BATCH", default=500)
# Each web process re-reads an ingest token at most this often (seconds); a
# revoked token is refused within that time everywhere. 0 = on every request.
PRODMON_INGEST_TOKEN_CACHE_SECONDS = env.int("PRODMON_INGEST_TOKEN_CACHE_SECONDS", default=5)

# /metrics: a bearer token when set; otherwise loopback clients only.
PRODMON_METRICS_TOKEN = env.str("PRODMON_METRICS_TOKEN", default="")
# Failed logins allowed per 15 minutes before 429.
PRODMON_LOGIN_FAILURES_PER_IP = env.int("PRODMON_LOGIN_FAILURES_PER_IP", default=50)
PRODMON_LOGIN_FAILURES_PER_USER = env.int("PRODMON_LOGIN_FAILURES_PER_USER", default=10)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "logserver.auth.IngestTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Never AllowAny: every endpoint needs a token or a logged-in user
    # unless it says otherwise.
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["logserver.parsers.BoundedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "logserver.errors.json_exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "ingest": env.str("PRODMON_INGEST_RATE", default="60000/min"),
        "ui": env.str("PRODMON_UI_RATE", default="600/min"),
    },
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "prodmon API",
    "DESCRIPTION": "Ingestion and read API of the prodmon production-operations portal.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
}

# --- Celery -----------------------------------------------------------------
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# The queue tasks go to, from the web and from tasks that enqueue others (an
# attempt's end fans out from a worker). Workers must consume it (-Q).
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="celery")
CELERY_BEAT_SCHEDULE: dict = {}


# PRODMON_LOG_FORMAT=json gives one JSON object per line (the production default).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "prodmon.logs.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": env.str("PRODMON_LOG_FORMAT", default="text"),
        }
    },
    "root": {"handlers": ["console"], "level": env.str("PRODMON_LOG_LEVEL", default="INFO")},
}

# --- logs: index, full-log store, retention ----------------------------------
PRODMON_LOG_INDEX = env.str("PRODMON_LOG_INDEX", default="database")  # or "elasticsearch"
PRODMON_LOG_INDEX_ON_INGEST = env.bool("PRODMON_LOG_INDEX_ON_INGEST", default=True)
PRODMON_LOG_INDEX_DEBOUNCE_SECONDS = env.int("PRODMON_LOG_INDEX_DEBOUNCE_SECONDS", default=5)
ELASTICSEARCH_URL = env.str("ELASTICSEARCH_URL", default="")
ELASTICSEARCH_API_KEY = env.str("ELASTICSEARCH_API_KEY", default="")
ELASTICSEARCH_CA_CERTS = env.str("ELASTICSEARCH_CA_CERTS", default="")
PRODMON_ES_DATA_STREAM_PREFIX = env.str("PRODMON_ES_DATA_STREAM_PREFIX", default="logs-prodmon")
LOGSTORE_BACKEND = env.str("LOGSTORE_BACKEND", default="filesystem")  # or "s3"
LOGSTORE_ROOT = env.str("LOGSTORE_ROOT", default=str(VAR_DIR / "logstore"))
LOGSTORE_MAX_BYTES = env.int("LOGSTORE_MAX_BYTES", default=4 * 1024**3)
LOGSTORE_S3_BUCKET = env.str("LOGSTORE_S3_BUCKET", default="")
LOGSTORE_S3_ENDPOINT_URL = env.str("LOGSTORE_S3_ENDPOINT_URL", default="")
LOGSTORE_S3_REGION = env.str("LOGSTORE_S3_REGION", default="")
LOGSTORE_S3_PREFIX = env.str("LOGSTORE_S3_PREFIX", default="prodmon/logs/")
LOGSTORE_S3_ADDRESSING_STYLE = env.str("LOGSTORE_S3_ADDRESSING_STYLE", default="path")
PRODMON_LOG_TAIL_RETENTION_DAYS = env.int("PRODMON_LOG_TAIL_RETENTION_DAYS", default=90)
PRODMON_FULL_LOG_RETENTION_DAYS = env.int("PRODMON_FULL_LOG_RETENTION_DAYS", default=30)

# --- submission layer and actions (docs/actions.md) -----------------------------
PRODMON_SUBMISSION_BACKEND = env.str("PRODMON_SUBMISSION_BACKEND", default="local")
PRODMON_SUBMISSION_URL = env.str("PRODMON_SUBMISSION_URL", default="http://127.0.0.1:8000")
PRODMON_SUBMISSION_DIR = Path(
    env.str("PRODMON_SUBMISSION_DIR", default=str(VAR_DIR / "submission"))
)
PRODMON_SUBMISSION_PYTHON = env.str("PRODMON_SUBMISSION_PYTHON", default=sys.executable)
PRODMON_SUBMISSION_REPORTER = env.str(
    "PRODMON_SUBMISSION_REPORTER", default=str(BASE_DIR / "logserver" / "prodmon_report.py")
)
PRODMON_LOCAL_MAX_JOBS = env.int("PRODMON_LOCAL_MAX_JOBS", default=os.cpu_count() or 2)
PRODMON_SLURM_PARTITION = env.str("PRODMON_SLURM_PARTITION", default="")
PRODMON_SLURM_ACCOUNT = env.str("PRODMON_SLURM_ACCOUNT", default="")
PRODMON_HTCONDOR_PYTHON = env.str("PRODMON_HTCONDOR_PYTHON", default="/usr/bin/python3")
PRODMON_HTCONDOR_SCHEDD = env.str("PRODMON_HTCONDOR_SCHEDD", default="")
PRODMON_LAUNCH_BACKOUT_SECONDS = env.int("PRODMON_LAUNCH_BACKOUT_SECONDS", default=60)
PRODMON_RETRY_MEMORY_FACTOR = env.float("PRODMON_RETRY_MEMORY_FACTOR", default=1.5)
PRODMON_RETRY_MEMORY_MAX_MB = env.int("PRODMON_RETRY_MEMORY_MAX_MB", default=16000)
PRODMON_RETRY_WALLTIME_FACTOR = env.float("PRODMON_RETRY_WALLTIME_FACTOR", default=1.5)
PRODMON_RETRY_WALLTIME_MAX_S = env.int("PRODMON_RETRY_WALLTIME_MAX_S", default=172800)
PRODMON_BATCH_END_GRACE_SECONDS = env.int("PRODMON_BATCH_END_GRACE_SECONDS", default=600)

# Liveness (triage): an attempt is lost after TRIAGE_LOST_AFTER_HEARTBEATS
# heartbeat periods without one; hung when neither its log nor its CPU time
# advanced for TRIAGE_HUNG_AFTER_SECONDS.
TRIAGE_HEARTBEAT_SECONDS = env.int("TRIAGE_HEARTBEAT_SECONDS", default=60)
TRIAGE_LOST_AFTER_HEARTBEATS = env.int("TRIAGE_LOST_AFTER_HEARTBEATS", default=3)
TRIAGE_HUNG_AFTER_SECONDS = env.int("TRIAGE_HUNG_AFTER_SECONDS", default=1800)
# A site's per-node failure counts (the black-hole baseline) are cached this long.
TRIAGE_BASELINE_CACHE_SECONDS = env.int("TRIAGE_BASELINE_CACHE_SECONDS", default=60)
# Campaign pages' job counts, per-site counts, throughput and recent failures.
PRODMON_PAGE_CACHE_SECONDS = env.int("PRODMON_PAGE_CACHE_SECONDS", default=60)
# The error summary (/errors/, /api/v1/errors/) is cached this long per set of filters.
TRIAGE_SUMMARY_CACHE_SECONDS = env.int("TRIAGE_SUMMARY_CACHE_SECONDS", default=60)

CELERY_BEAT_SCHEDULE = {
    "stage-progress-sweep": {"task": "prodmon.stage_progress_sweep_task", "schedule": 60.0},
    # Catches failures whose classification task was lost (broker down, worker killed).
    "triage-classify-sweep": {"task": "triage.attempt_classify_sweep_task", "schedule": 300.0},
    "triage-node-health-sweep": {"task": "triage.node_health_sweep_task", "schedule": 600.0},
    "triage-liveness-sweep": {"task": "triage.liveness_sweep_task", "schedule": 60.0},
    # Ingest marks attempts whose log grew; this sends their indexing tasks.
    "log-index-dirty": {
        "task": "logserver.log_index_dirty_task",
        "schedule": float(env.int("PRODMON_LOG_INDEX_DEBOUNCE_SECONDS", default=5) or 5),
    },
    "log-index-reconcile": {"task": "logserver.log_index_reconcile_task", "schedule": 300.0},
    "ingest-drain": {"task": "logserver.ingest_drain_task", "schedule": 5.0},
    "logs-retention": {"task": "logserver.logs_retention_task", "schedule": 6 * 3600.0},
    "progress-sweep": {"task": "progress.progress_sweep_task", "schedule": 300.0},
    # Keeps campaign estimates in the cache so the pages do not replay them.
    "progress-estimates-refresh": {
        "task": "progress.estimates_refresh_task",
        "schedule": env.float("PRODMON_ETA_REFRESH_SECONDS", default=300.0),
    },
    "progress-weekly-reports": {
        "task": "progress.weekly_reports_send_task",
        "schedule": crontab(minute=0, hour=7, day_of_week="mon"),
    },
    "actions-due-sweep": {"task": "actions.bulk_action_due_sweep_task", "schedule": 15.0},
    "actions-submission-poll": {"task": "actions.submission_poll_task", "schedule": 60.0},
    "triage-lifecycle-sweep": {
        "task": "triage.error_class_lifecycle_sweep_task",
        "schedule": 3600.0,
    },
}
