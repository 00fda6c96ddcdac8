"""Per-token ingest rate limit. Answers 429 with Retry-After (DRF sets it)."""

from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle


class IngestRateThrottle(SimpleRateThrottle):
    scope = "ingest"

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
