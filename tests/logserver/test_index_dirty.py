"""With a Redis cache (production), ingest only marks an attempt's log dirty
(one SADD, no Celery message on the request path); the beat task drains the
set into one indexing task per attempt. Real Redis, real ingest, real index."""

import os
import uuid

import pytest
from django.core.cache import caches

from logserver import indexing
from logserver.models import LogLine
from tests.conftest import service_missing, uses_postgres
from tests.logserver.conftest import ingest_log

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def redis_cache(settings):
    url = os.environ.get("REDIS_CACHE_URL") or os.environ.get("CELERY_BROKER_URL", "")
    if not url.startswith("redis"):
        if not uses_postgres():  # the embedded SQLite pass runs without services
            pytest.skip("needs Redis: runs in the PostgreSQL + Redis pass (.ci/run)")
        service_missing("needs Redis: set CELERY_BROKER_URL=redis://… (.ci/run does)")
    settings.CACHES = {
        "default": {
            "BACKEND": "prodmon.cache.PooledRedisCache",
            "LOCATION": url,
            "KEY_PREFIX": f"test-{uuid.uuid4().hex[:8]}",
        }
    }
    yield caches["default"]
    caches["default"].clear()


def _dirty(cache) -> set[int]:
    client = cache._cache.get_client(write=True)
    return {int(x) for x in client.smembers(cache.make_key(indexing.DIRTY_KEY))}


def test_ingest_marks_the_attempt_dirty_and_the_drain_indexes_it(
    redis_cache, make_attempt, ingest_token, django_capture_on_commit_callbacks
):
    attempt = make_attempt()
    with django_capture_on_commit_callbacks(execute=True):
        ingest_log(ingest_token[0], attempt, 0, b"first line\nsecond line\n")
        ingest_log(ingest_token[0], attempt, 23, b"third line\n")
    assert _dirty(redis_cache) == {attempt.pk}  # marked once, nothing indexed yet
    assert not LogLine.objects.filter(attempt=attempt).exists()

    assert indexing.log_index_dirty_drain() == 1  # tasks are eager in the tests
    assert _dirty(redis_cache) == set()
    assert list(
        LogLine.objects.filter(attempt=attempt).order_by("line_no").values_list("text", flat=True)
    ) == ["first line", "second line", "third line"]
    assert indexing.log_index_dirty_drain() == 0
