"""Triage JSON under /api/v1/errors/: scoped by membership or a read token."""

import pytest
from django.test import Client
from django.urls import reverse

from tests.factories import make_token
from triage import services

pytestmark = pytest.mark.django_db

BAD_ALLOC = "event 7\nterminate called after throwing an instance of 'std::bad_alloc'\n"


@pytest.fixture
def classified(ended_attempt):
    rows = [
        services.attempt_classify(attempt_id=ended_attempt(log=BAD_ALLOC, wall_s=1800).pk)
        for _ in range(3)
    ]
    return rows[0].error_class


def bearer(raw):
    return Client(HTTP_AUTHORIZATION=f"Bearer {raw}")


def test_it_summarizes_errors_for_members(classified, people, stage):
    client = Client()
    client.force_login(people["viewer"])
    data = client.get(reverse("api-error-summary"), {"window": "24h", "site": "FNAL"}).json()
    assert data["total_failures"] == 3
    assert data["total_wall_s"] == 5400
    [row] = data["classes"]
    assert row["error_class"]["key"] == "rule:builtin:bad-alloc"
    assert (row["failures"], row["wall_s"]) == (3, 5400)
    assert row["jobs_url"].startswith("/jobs/?state=failed&site=FNAL")
    [cell] = data["matrix"]
    assert (cell["stage_id"], cell["site"], cell["failures"]) == (stage.pk, "FNAL", 3)
    assert cell["top_class_id"] == classified.pk


def test_it_scopes_the_summary_to_the_callers_experiments(classified, people, other_experiment):
    client = Client()
    client.force_login(people["outsider"])
    assert client.get(reverse("api-error-summary")).json()["classes"] == []
    _, raw = make_token(other_experiment, scopes=("read",))
    assert bearer(raw).get(reverse("api-error-summary")).json()["total_failures"] == 0


def test_it_needs_the_read_scope_for_tokens(classified, experiment):
    _, ingest_only = make_token(experiment, scopes=("ingest",), name="ingest-only")
    assert bearer(ingest_only).get(reverse("api-error-summary")).status_code == 403
    _, reader = make_token(experiment, scopes=("read",), name="reader")
    assert bearer(reader).get(reverse("api-error-summary")).json()["total_failures"] == 3
    assert Client().get(reverse("api-error-summary")).status_code in (401, 403)


def test_it_describes_one_class_with_trend_affected_and_samples(
    classified, experiment, other_experiment
):
    _, reader = make_token(experiment, scopes=("read",), name="reader")
    data = bearer(reader).get(reverse("api-error-class", args=[classified.pk])).json()
    assert data["error_class"]["title"] == "Out of memory (std::bad_alloc)"
    assert len(data["trend"]["24h"]) == 24
    assert len(data["trend"]["14d"]) == 14
    assert sum(b["failures"] for b in data["trend"]["24h"]) == 3
    assert data["affected"]["sites"] == [{"site": "FNAL", "failures": 3}]
    assert data["samples"][0]["line"].endswith("'std::bad_alloc'")
    _, elsewhere = make_token(other_experiment, scopes=("read",), name="other")
    assert (
        bearer(elsewhere).get(reverse("api-error-class", args=[classified.pk])).status_code == 404
    )


def test_it_validates_filters(people):
    client = Client()
    client.force_login(people["viewer"])
    assert client.get(reverse("api-error-summary"), {"window": "forever"}).status_code == 400


@pytest.mark.parametrize("field", ["experiment", "campaign", "stage"])
def test_an_id_beyond_64_bits_is_a_named_400_not_a_database_error(people, field):
    client = Client()
    client.force_login(people["viewer"])
    r = client.get(reverse("api-error-summary"), {field: str(2**70)})
    assert r.status_code == 400
    assert field in r.json()["fields"]
