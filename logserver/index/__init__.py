"""The log index, chosen by PRODMON_LOG_INDEX=database|elasticsearch."""

from django.core.exceptions import ImproperlyConfigured

from logserver.conf import setting
from logserver.index.base import (
    AttemptLabels,
    IndexLine,
    LogIndex,
    LogIndexError,
    ParsedQuery,
    SearchHit,
    SearchPage,
    SearchQuery,
)

__all__ = [
    "AttemptLabels",
    "IndexLine",
    "LogIndex",
    "LogIndexError",
    "ParsedQuery",
    "SearchHit",
    "SearchPage",
    "SearchQuery",
    "get_log_index",
]

BACKENDS = ("database", "elasticsearch")


def get_log_index() -> LogIndex:
    name = setting("PRODMON_LOG_INDEX")
    if name == "database":
        from logserver.index.database import DatabaseLogIndex

        return DatabaseLogIndex()
    if name == "elasticsearch":
        from logserver.index.elasticsearch import ElasticsearchLogIndex

        return ElasticsearchLogIndex.from_settings()
    raise ImproperlyConfigured(
        f"PRODMON_LOG_INDEX must be one of {', '.join(BACKENDS)}, not {name!r}"
    )
