"""Refuse oversize bodies before Django or DRF reads a byte of them."""

import re

from django.conf import settings
from django.http import JsonResponse

from logserver.conf import setting

LIMITED_PREFIXES = ("/api/", "/loki/")
# Full-log uploads are streamed to the file store and have their own, larger limit.
FULL_LOG_PATH = re.compile(r"^/api/v1/attempts/[0-9a-fA-F-]{32,36}/log$")


class BodySizeLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith(LIMITED_PREFIXES):
            if FULL_LOG_PATH.match(request.path):
                limit = int(setting("LOGSTORE_MAX_BYTES"))
            else:
                limit = settings.INGEST_MAX_BODY_BYTES
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return JsonResponse(
                    {"error": "invalid", "message": "Content-Length is not a number"}, status=400
                )
            if length > limit:
                return JsonResponse(
                    {
                        "error": "payload_too_large",
                        "message": f"request body of {length} bytes exceeds the limit of "
                        f"{limit} bytes; send smaller chunks or use several bulk requests",
                    },
                    status=413,
                )
        return self.get_response(request)
