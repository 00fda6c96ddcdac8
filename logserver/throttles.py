"""Ingest admission: a per-token rate limit and a global capacity limit.

Both answer 429 with Retry-After (DRF sets it) before any database work, so
a server at 2x its capacity sheds the excess cheaply instead of queueing it
into time-outs. Both are fixed-window counters in the cache (Redis in
production), shared by every worker: one INCR per limit and request, whatever
the rate. (DRF's SimpleRateThrottle keeps a list of every request time in the
window and rewrites it on each request: at 60,000/min that list is tens of
kilobytes read and written per event.)

- global: PRODMON_INGEST_CAPACITY events per second, 0 = off; a bulk request
  weighs as many events as it carries;
- per token: the "ingest" rate of REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
  (PRODMON_INGEST_RATE), e.g. "60000/min".
"""

import math
import time

from django.conf import settings
from django.core.cache import cache
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def window_admit(key: str, weight: int, limit: int, period: int, now: float) -> tuple[bool, float]:
    """Count `weight` into the current window of `period` seconds.

    Returns (admitted, seconds until the window ends). A request is admitted
    while the window had room before it, so one large batch can always get
    through an idle window, and what follows it in that window is shed.
    """
    start = int(now // period) * period
    full_key = f"{key}:{start}"
    incr_window = getattr(cache, "incr_window", None)  # Redis (prodmon.cache): one round trip
    if incr_window is not None:
        after = incr_window(full_key, weight, period + 5)
        return after - weight < limit, max(start + period - now, 0.001)
    try:
        after = cache.incr(full_key, weight)
    except ValueError:  # first in this window (or expired between calls)
        if cache.add(full_key, weight, timeout=period + 5):
            after = weight
        else:
            after = cache.incr(full_key, weight)
    return after - weight < limit, max(start + period - now, 0.001)


def parse_rate(rate: str | None) -> tuple[int, int] | None:
    """'60000/min' -> (60000, 60); None or '' -> None (no limit)."""
    if not rate:
        return None
    count, _, period = rate.partition("/")
    return int(count), PERIODS[period[0]]


def _weight(request) -> int:
    if request.path.endswith("/bulk/"):
        events = request.data.get("events") if isinstance(request.data, dict) else None
        return max(len(events), 1) if isinstance(events, list) else 1
    return 1


def ingest_admit(*, token, weight: int) -> bool:
    """The checks of IngestRateThrottle for a token's request outside DRF
    (the queued fast path): global capacity, then the token's own rate."""
    capacity = settings.PRODMON_INGEST_CAPACITY
    if capacity > 0 and not window_admit("ingest-capacity", weight, capacity, 1, time.time())[0]:
        return False
    rate = parse_rate(api_settings.DEFAULT_THROTTLE_RATES.get(IngestRateThrottle.scope))
    if rate is None:
        return True
    return window_admit(
        f"throttle:{IngestRateThrottle.scope}:token-{token.pk}", 1, rate[0], rate[1], time.time()
    )[0]


class GlobalIngestThrottle(BaseThrottle):
    """A one-second window of events shared by all workers."""

    def allow_request(self, request, view) -> bool:
        capacity = settings.PRODMON_INGEST_CAPACITY
        if capacity <= 0:
            return True
        admitted, _ = window_admit("ingest-capacity", _weight(request), capacity, 1, time.time())
        return admitted

    def wait(self) -> float:
        return 1.0


class IngestRateThrottle(BaseThrottle):
    """The global capacity first, then the token's own rate."""

    scope = "ingest"

    def __init__(self):
        self._wait: float | None = None

    def allow_request(self, request, view) -> bool:
        if not GlobalIngestThrottle().allow_request(request, view):
            self._wait = 1.0
            return False
        # Read at call time, not import time, so settings changes apply.
        rate = parse_rate(api_settings.DEFAULT_THROTTLE_RATES.get(self.scope))
        if rate is None:
            return True
        token = request.auth
        ident = f"token-{token.pk}" if getattr(token, "pk", None) else self.get_ident(request)
        admitted, remaining = window_admit(
            f"throttle:{self.scope}:{ident}", 1, rate[0], rate[1], time.time()
        )
        if not admitted:
            self._wait = remaining
        return admitted

    def wait(self) -> float | None:
        # Retry-After is whole seconds; never advertise 0 for a shed request.
        return None if self._wait is None else float(max(math.ceil(self._wait), 1))
