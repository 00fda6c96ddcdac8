"""Ingest-token authentication and the scope permission, as DRF policy classes."""

import base64
import binascii
import datetime as dt

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


def token_authenticate(raw: str) -> tuple[TokenPrincipal, IngestToken]:
    token = _token_find(token_digest(raw))
    if token is None:
        raise exceptions.AuthenticationFailed("unknown ingest token")
    if token.revoked_at is not None:
        raise exceptions.AuthenticationFailed("this ingest token has been revoked")
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        IngestToken.objects.filter(pk=token.pk).update(last_used_at=now)
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
