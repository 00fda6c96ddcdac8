"""Django's Redis cache, with one client per connection pool.

Django's RedisCacheClient builds a new `redis.Redis` for every cache call, and
redis-py fills a case-insensitive table of some 170 response callbacks each
time it builds one: about 0.7 ms of CPU per call, more than the round trip.
Rate limits and the log-index debounce make such calls on every ingest
request, so the client is built once per pool and reused (a `redis.Redis` is
thread-safe: each command takes a connection from the pool).
"""

from django.core.cache.backends.redis import RedisCache, RedisCacheClient


class PooledRedisCacheClient(RedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients: dict[int, object] = {}

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients.setdefault(id(pool), self._client(connection_pool=pool))
        return client


class PooledRedisCache(RedisCache):
    """BACKEND = "prodmon.cache.PooledRedisCache"; LOCATION as for RedisCache."""

    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = PooledRedisCacheClient

    def incr_window(self, key: str, delta: int, timeout: int) -> int:
        """Add `delta` to a counter that expires `timeout` seconds after it was
        created; the new value. One round trip (INCRBY) except for the call
        that creates the counter, which also sets its expiry; `incr` costs two
        (EXISTS, then INCRBY) and needs an `add` first."""
        key = self.make_and_validate_key(key)
        client = self._cache.get_client(key, write=True)
        value = client.incrby(key, delta)
        if value == delta:  # created by this call
            client.expire(key, timeout)
        return value
