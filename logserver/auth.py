"""Ingest-token authentication and the scope permission, as DRF policy classes."""

import datetime as dt

from django.utils import timezone
from rest_framework import authentication, exceptions, permissions

from logserver.models import TOKEN_PREFIX, IngestToken, token_digest

# last_used_at is written at most this often per token, to keep the hot path lean.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


class TokenPrincipal:
    """The request.user of a token-authenticated request: an experiment's agent."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None

    def __init__(self, token: IngestToken):
        self.token = token
        self.experiment = token.experiment

    def get_username(self) -> str:
        return f"token:{self.experiment.name}:{self.token.name}"

    def __str__(self) -> str:
        return self.get_username()


class IngestTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer pm_…`. Looked up by hash on every request, so a
    revoked token stops working on the very next request, on every worker."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        parts = header.split()
        if len(parts) != 2 or parts[0] != self.keyword or not parts[1].startswith(TOKEN_PREFIX):
            return None  # not ours; another scheme may handle it
        token = (
            IngestToken.objects.select_related("experiment")
            .filter(token_hash=token_digest(parts[1]))
            .first()
        )
        if token is None:
            raise exceptions.AuthenticationFailed("unknown ingest token")
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("this ingest token has been revoked")
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
            IngestToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return TokenPrincipal(token), token

    def authenticate_header(self, request) -> str:
        return self.keyword


class HasIngestScope(permissions.BasePermission):
    message = "this endpoint needs an ingest token with the 'ingest' scope"

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, IngestToken) and request.auth.has_scope("ingest")
