"""Ingest-token authentication and the scope permission, as DRF policy classes."""

import base64
import binascii
import datetime as dt
import time

from django.conf import settings
from django.db import connection
from django.utils import timezone
from rest_framework import authentication, exceptions, permissions

from logserver.models import TOKEN_PREFIX, IngestToken, token_digest
from prodmon import rows
from prodmon.models import Experiment

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
    """`Authorization: Bearer pm_…`, looked up by hash. With
    PRODMON_INGEST_TOKEN_CACHE_SECONDS = 0 on every request; otherwise each
    process re-reads a token at most that often, so a revoked token stops
    working within that many seconds on every worker (at once in the process
    that revoked it)."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        parts = header.split()
        if len(parts) != 2 or parts[0] != self.keyword or not parts[1].startswith(TOKEN_PREFIX):
            return None  # not ours; another scheme may handle it
        return token_authenticate(parts[1])

    def authenticate_header(self, request) -> str:
        return self.keyword


def _token_find(digest: str) -> IngestToken | None:
    """The token and its experiment in one hand-written statement: this runs
    on every ingest request, and the ORM's compiler would cost more than it."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {rows.select_list(IngestToken, 't')}, {rows.select_list(Experiment, 'e')} "  # noqa: S608
            f"FROM {rows.table(IngestToken)} t JOIN {rows.table(Experiment)} e "
            "ON e.id = t.experiment_id WHERE t.token_hash = %s",
            [digest],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    token = rows.load(IngestToken, row)
    token.experiment = rows.load(Experiment, row, start=len(IngestToken._meta.concrete_fields))
    return token


# digest -> (monotonic time read, token or None); per process.
_token_cache: dict[str, tuple[float, IngestToken | None]] = {}
_TOKEN_CACHE_MAX = 10_000
_clock = time.monotonic


def _token_cached(digest: str) -> IngestToken | None:
    """The token of a digest, read at most every PRODMON_INGEST_TOKEN_CACHE_SECONDS
    per process (0 = every request). A cached token is shared by the requests
    of that window; its fields are only read."""
    ttl = settings.PRODMON_INGEST_TOKEN_CACHE_SECONDS
    if ttl <= 0:
        return _token_find(digest)
    now = _clock()
    hit = _token_cache.get(digest)
    if hit is not None and now - hit[0] < ttl:
        return hit[1]
    token = _token_find(digest)
    if len(_token_cache) >= _TOKEN_CACHE_MAX:
        _token_cache.clear()  # many distinct (mostly bogus) tokens: start over
    _token_cache[digest] = (now, token)
    return token


def token_cache_forget(digest: str | None = None) -> None:
    """Drop this process's cached token(s), e.g. right after a revocation."""
    if digest is None:
        _token_cache.clear()
    else:
        _token_cache.pop(digest, None)


def token_authenticate(raw: str) -> tuple[TokenPrincipal, IngestToken]:
    token = _token_cached(token_digest(raw))
    if token is None:
        raise exceptions.AuthenticationFailed("unknown ingest token")
    if token.revoked_at is not None:
        raise exceptions.AuthenticationFailed("this ingest token has been revoked")
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        IngestToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now  # the cached copy too: once a minute, not per request
    return TokenPrincipal(token), token


class IngestTokenBasicAuthentication(authentication.BaseAuthentication):
    """HTTP basic auth with an ingest token as the password (any user name):
    what Fluent Bit, Vector, Promtail and Alloy configure most easily."""

    def authenticate(self, request):
        parts = authentication.get_authorization_header(request).split()
        if len(parts) != 2 or parts[0].lower() != b"basic":
            return None
        try:
            decoded = base64.b64decode(parts[1], validate=True).decode("utf-8")
        except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
            raise exceptions.AuthenticationFailed("malformed basic-auth credentials") from exc
        _, _, password = decoded.partition(":")
        if not password.startswith(TOKEN_PREFIX):
            raise exceptions.AuthenticationFailed(
                "the basic-auth password must be an ingest token (pm_…)"
            )
        return token_authenticate(password)

    def authenticate_header(self, request) -> str:
        return 'Basic realm="prodmon"'


def caller_experiment_ids(request) -> set[int]:
    """Experiments a request may read: a token's own (with the `read` scope),
    or a logged-in user's memberships."""
    from prodmon.selectors import experiment_ids_for_user

    if isinstance(request.auth, IngestToken):
        if not request.auth.has_scope("read"):
            raise exceptions.PermissionDenied("this token lacks the 'read' scope")
        return {request.auth.experiment_id}
    return experiment_ids_for_user(user=request.user)


class HasIngestScope(permissions.BasePermission):
    message = "this endpoint needs an ingest token with the 'ingest' scope"

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, IngestToken) and request.auth.has_scope("ingest")
