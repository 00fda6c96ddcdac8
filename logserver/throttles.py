"""Ingest admission: a per-token rate limit and a global capacity limit.

Both answer 429 with Retry-After (DRF sets it) before any database work, so
a server at 2x its capacity sheds the excess cheaply instead of queueing it
into time-outs. The global limit is shared by every worker through the cache
(Redis in production): PRODMON_INGEST_CAPACITY events per second, 0 = off.
"""

import time

from django.conf import settings
from django.core.cache import cache
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle


class GlobalIngestThrottle(BaseThrottle):
    """A one-second window of events shared by all workers.

    A bulk request weighs as many events as it carries. A request is admitted
    while the window had room before it, so one large batch can always get
    through an idle second, and what follows it in that second is shed."""

    def allow_request(self, request, view) -> bool:
        capacity = settings.PRODMON_INGEST_CAPACITY
        if capacity <= 0:
            return True
        weight = _weight(request)
        key = f"ingest-capacity:{int(time.time())}"
        if cache.add(key, weight, timeout=5):
            return True
        try:
            after = cache.incr(key, weight)
        except ValueError:  # expired between add and incr
            cache.set(key, weight, timeout=5)
            return True
        return after - weight < capacity

    def wait(self) -> float:
        return 1.0


def _weight(request) -> int:
    if request.path.endswith("/bulk/"):
        events = request.data.get("events") if isinstance(request.data, dict) else None
        return max(len(events), 1) if isinstance(events, list) else 1
    return 1


class IngestRateThrottle(SimpleRateThrottle):
    """The global capacity first, then the token's own rate."""

    scope = "ingest"
    _over_capacity = False

    def allow_request(self, request, view) -> bool:
        if not GlobalIngestThrottle().allow_request(request, view):
            self._over_capacity = True
            return False
        return super().allow_request(request, view)

    def wait(self):
        return 1.0 if self._over_capacity else super().wait()

    def get_rate(self):
        # Read at call time, not import time, so settings changes apply.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def get_cache_key(self, request, view):
        token = request.auth
        ident = (
            f"token-{token.pk}"
            if token is not None and hasattr(token, "pk")
            else self.get_ident(request)
        )
        return self.cache_format % {"scope": self.scope, "ident": ident}
