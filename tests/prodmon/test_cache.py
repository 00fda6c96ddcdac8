"""The Redis cache backend prodmon configures: real Redis, one client per pool."""

import os
import threading
import uuid

import pytest

from prodmon.cache import PooledRedisCache
from tests.conftest import service_missing, uses_postgres


@pytest.fixture
def redis_cache():
    url = os.environ.get("REDIS_CACHE_URL") or os.environ.get("CELERY_BROKER_URL", "")
    if not url.startswith("redis"):
        if not uses_postgres():  # the embedded SQLite pass runs without services
            pytest.skip("needs Redis: runs in the PostgreSQL + Redis pass (.ci/run)")
        service_missing("needs Redis: set CELERY_BROKER_URL=redis://… (.ci/run does)")
    cache = PooledRedisCache(url, {"KEY_PREFIX": f"test-{uuid.uuid4().hex[:8]}"})
    yield cache
    cache.clear()


def test_it_reuses_one_client_and_behaves_as_django_redis_cache(redis_cache):
    client = redis_cache._cache.get_client(write=True)
    assert redis_cache._cache.get_client(write=True) is client
    assert redis_cache.add("k", 1, timeout=30) is True
    assert redis_cache.add("k", 5, timeout=30) is False
    assert redis_cache.incr("k", 4) == 5
    redis_cache.set("obj", {"a": [1, 2]}, timeout=30)
    assert redis_cache.get("obj") == {"a": [1, 2]}
    with pytest.raises(ValueError, match="not found"):
        redis_cache.incr("missing")


def test_threads_share_the_client_without_losing_increments(redis_cache):
    redis_cache.set("n", 0, timeout=60)

    def bump():
        for _ in range(200):
            redis_cache.incr("n")

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert redis_cache.get("n") == 1600
