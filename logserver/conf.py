"""The logserver's settings, read at call time with their documented defaults.

The project settings (prodmon/settings/base.py) set these from environment
variables; the defaults here keep the app working when one is not set.
"""

from pathlib import Path

from django.conf import settings

DEFAULTS = {
    # Which log index backend: "database" (PostgreSQL FTS / SQLite FTS5) or "elasticsearch".
    "PRODMON_LOG_INDEX": "database",
    # Enqueue indexing from the ingest path; the reconciler catches up either way.
    "PRODMON_LOG_INDEX_ON_INGEST": True,
    # At most one index task per attempt per this many seconds.
    "PRODMON_LOG_INDEX_DEBOUNCE_SECONDS": 5,
    "ELASTICSEARCH_URL": "",
    "ELASTICSEARCH_API_KEY": "",
    "ELASTICSEARCH_CA_CERTS": "",
    "ELASTICSEARCH_VERIFY_CERTS": True,
    "PRODMON_ES_DATA_STREAM_PREFIX": "logs-prodmon",
    "PRODMON_ES_ROLLOVER_MAX_AGE": "7d",
    "PRODMON_ES_ROLLOVER_MAX_PRIMARY_SHARD_SIZE": "50gb",
    # Full-log file store: "filesystem" (LOGSTORE_ROOT) or "s3".
    "LOGSTORE_BACKEND": "filesystem",
    "LOGSTORE_ROOT": "",
    "LOGSTORE_MAX_BYTES": 4 * 1024**3,
    "LOGSTORE_S3_BUCKET": "",
    "LOGSTORE_S3_ENDPOINT_URL": "",
    "LOGSTORE_S3_REGION": "",
    "LOGSTORE_S3_PREFIX": "prodmon/logs/",
    "LOGSTORE_S3_ADDRESSING_STYLE": "path",
    # Retention defaults, per experiment overridable (LogRetentionPolicy).
    "PRODMON_LOG_TAIL_RETENTION_DAYS": 90,
    "PRODMON_FULL_LOG_RETENTION_DAYS": 30,
}


def setting(name: str):
    return getattr(settings, name, DEFAULTS[name])


def logstore_root() -> Path:
    root = setting("LOGSTORE_ROOT")
    if root:
        return Path(root)
    return Path(settings.VAR_DIR) / "logstore"
