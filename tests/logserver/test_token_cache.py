"""Ingest tokens are re-read at most every PRODMON_INGEST_TOKEN_CACHE_SECONDS per process."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.exceptions import AuthenticationFailed

from logserver import auth
from logserver.models import IngestToken
from logserver.services import token_revoke
from tests.factories import make_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(auth, "_clock", lambda: now[0])
    auth.token_cache_forget()
    yield now
    auth.token_cache_forget()


def token_reads(raw: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        auth.token_authenticate(raw)
    return sum("token_hash" in q["sql"] for q in queries.captured_queries)


def test_a_token_is_read_once_per_window(experiment, clock, settings):
    settings.PRODMON_INGEST_TOKEN_CACHE_SECONDS = 5
    _, raw = make_token(experiment, scopes=("ingest",))
    assert token_reads(raw) == 1
    assert token_reads(raw) == 0
    clock[0] += 5.1
    assert token_reads(raw) == 1


def test_a_revocation_elsewhere_takes_effect_within_the_window(experiment, clock, settings):
    settings.PRODMON_INGEST_TOKEN_CACHE_SECONDS = 5
    token, raw = make_token(experiment, scopes=("ingest",))
    auth.token_authenticate(raw)
    # Another process revokes it: this one still has it cached for the window.
    IngestToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
    auth.token_authenticate(raw)
    clock[0] += 5.1
    with pytest.raises(AuthenticationFailed, match="revoked"):
        auth.token_authenticate(raw)


def test_a_revocation_in_this_process_takes_effect_at_once(experiment, clock, settings):
    settings.PRODMON_INGEST_TOKEN_CACHE_SECONDS = 5
    token, raw = make_token(experiment, scopes=("ingest",))
    auth.token_authenticate(raw)
    token_revoke(token=token)
    with pytest.raises(AuthenticationFailed, match="revoked"):
        auth.token_authenticate(raw)


def test_an_unknown_token_is_remembered_too_and_zero_turns_the_cache_off(
    experiment, clock, settings
):
    settings.PRODMON_INGEST_TOKEN_CACHE_SECONDS = 5
    for _ in range(2):
        with pytest.raises(AuthenticationFailed, match="unknown"):
            auth.token_authenticate("pm_" + "x" * 43)
    settings.PRODMON_INGEST_TOKEN_CACHE_SECONDS = 0
    _, raw = make_token(experiment, scopes=("ingest",))
    assert token_reads(raw) == 1
    assert token_reads(raw) == 1
