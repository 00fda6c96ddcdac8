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


def test_a_window_counter_counts_from_nothing_and_expires(redis_cache):
    assert redis_cache.incr_window("w", 3, timeout=2) == 3
    assert redis_cache.incr_window("w", 2, timeout=2) == 5
    assert redis_cache.get("w") == 5
    ttl = redis_cache._cache.get_client().ttl(redis_cache.make_and_validate_key("w"))
    assert 0 < ttl <= 2  # the first call set the expiry; later ones did not extend it


def test_the_ingest_throttle_shares_one_window_through_redis(redis_cache, monkeypatch):
    from logserver import throttles

    monkeypatch.setattr(throttles, "cache", redis_cache)
    admitted = [throttles.window_admit("t", 1, 3, 60, 1200.0)[0] for _ in range(5)]
    assert admitted == [True, True, True, False, False]
    assert throttles.window_admit("t", 1, 3, 60, 1260.0) == (True, 60.0)  # the next window
