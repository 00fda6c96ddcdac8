"""Operability: database outages answer 503 with Retry-After, the global
ingest capacity sheds with 429, /metrics, JSON logs, login rate limits."""

import json
import logging
import uuid

import psycopg
import pytest
from django.core.cache import cache
from django.db import close_old_connections, connection
from django.test import Client

from prodmon.logs import JsonFormatter
from tests.factories import CampaignFactory, StageFactory, UserFactory


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()
    yield
    cache.clear()


def _start_body():
    return {
        "event_id": uuid.uuid4().hex,
        "campaign": "mc",
        "stage": "gen",
        "job": "a.root",
        "attempt": str(uuid.uuid4()),
        "host": "wn1",
    }


def _post(client, body):
    return client.post(
        "/api/v1/ingest/start/", data=json.dumps(body), content_type="application/json"
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("require_postgres")
def test_it_answers_503_with_retry_after_when_the_database_connection_dies(
    experiment, ingest_token
):
    StageFactory(campaign=CampaignFactory(experiment=experiment, name="mc"), name="gen")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {ingest_token[1]}", raise_request_exception=False)
    assert _post(client, _start_body()).status_code == 201
    # Kill this process's server connection from outside, as a restart would.
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    settings_dict = connection.settings_dict
    with psycopg.connect(
        host=settings_dict["HOST"] or "127.0.0.1",
        port=settings_dict["PORT"] or 5432,
        user=settings_dict["USER"],
        dbname="postgres",
        autocommit=True,
    ) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    body = _start_body()
    r = _post(client, body)
    assert r.status_code == 503
    assert r["Retry-After"] == "5"
    assert r.json()["error"] == "unavailable"
    # Django drops an errored connection at the end of each request (the test
    # client unhooks that signal, so run it here as the request boundary does).
    close_old_connections()
    # The client retries the same event once the database is back: applied once.
    r = _post(client, body)
    assert r.status_code == 201
    from logserver.models import IngestEvent

    assert IngestEvent.objects.filter(event_id=body["event_id"]).count() == 1


@pytest.mark.django_db
def test_it_sheds_past_the_global_capacity_with_429_and_retry_after(
    experiment, ingest_token, settings, monkeypatch
):
    StageFactory(campaign=CampaignFactory(experiment=experiment, name="mc"), name="gen")
    settings.PRODMON_INGEST_CAPACITY = 3
    # Pin the clock: all requests fall in one one-second window.
    monkeypatch.setattr("logserver.throttles.time.time", lambda: 1_800_000_000.5)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {ingest_token[1]}")
    responses = [_post(client, _start_body()) for _ in range(5)]
    assert [r.status_code for r in responses] == [201, 201, 201, 429, 429]
    assert responses[3]["Retry-After"] == "1"
    # Shed requests did no database work.
    from prodmon.models import Attempt

    assert Attempt.objects.count() == 3


@pytest.mark.django_db
def test_capacity_zero_means_no_global_limit(experiment, ingest_token, settings):
    StageFactory(campaign=CampaignFactory(experiment=experiment, name="mc"), name="gen")
    settings.PRODMON_INGEST_CAPACITY = 0
    client = Client(HTTP_AUTHORIZATION=f"Bearer {ingest_token[1]}")
    assert [_post(client, _start_body()).status_code for _ in range(10)] == [201] * 10


@pytest.mark.django_db
def test_metrics_count_ingest_requests_by_kind_and_status(experiment, ingest_token):
    StageFactory(campaign=CampaignFactory(experiment=experiment, name="mc"), name="gen")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {ingest_token[1]}", REMOTE_ADDR="127.0.0.1")

    def count(text, status):
        for line in text.splitlines():
            if line.startswith("prodmon_ingest_requests_total{") and (
                'kind="start"' in line and f'status="{status}"' in line
            ):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = client.get("/metrics").content.decode()
    _post(client, _start_body())
    _post(client, {"event_id": "bad"})
    after = client.get("/metrics").content.decode()
    assert count(after, 201) == count(before, 201) + 1
    assert count(after, 400) == count(before, 400) + 1
    assert "prodmon_ingest_latency_seconds_bucket" in after
    assert "prodmon_celery_queue_depth" in after


@pytest.mark.django_db
def test_metrics_are_refused_to_strangers_and_need_the_token_when_set(settings):
    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 403
    settings.PRODMON_METRICS_TOKEN = "s3cret"
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 403
    ok = Client(REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer s3cret").get("/metrics")
    assert ok.status_code == 200


def test_json_logs_are_one_object_per_line_with_extras():
    record = logging.makeLogRecord(
        {
            "name": "prodmon.x",
            "levelname": "WARNING",
            "msg": "bad %s",
            "args": ("<thing>",),
            "attempt": "abc",
        }
    )
    line = JsonFormatter().format(record)
    body = json.loads(line)
    assert "\n" not in line
    assert body["message"] == "bad <thing>"
    assert body["log.level"] == "warning"
    assert body["attempt"] == "abc"


@pytest.mark.django_db
def test_login_failures_are_rate_limited_per_user(settings):
    settings.PRODMON_LOGIN_FAILURES_PER_USER = 3
    UserFactory(username="alice")
    client = Client()
    codes = [
        client.post("/accounts/login/", {"username": "alice", "password": "wrong"}).status_code
        for _ in range(4)
    ]
    assert codes == [200, 200, 200, 429]
    # Even the right password is refused while the limit holds.
    r = client.post("/accounts/login/", {"username": "alice", "password": "pw-for-tests"})
    assert r.status_code == 429
    assert int(r["Retry-After"]) > 0


@pytest.mark.django_db
def test_a_good_login_still_works_below_the_limit():
    UserFactory(username="bob")
    client = Client()
    client.post("/accounts/login/", {"username": "bob", "password": "wrong"})
    r = client.post("/accounts/login/", {"username": "bob", "password": "pw-for-tests"})
    assert r.status_code == 302


@pytest.mark.django_db
def test_a_bulk_request_weighs_as_many_events_as_it_carries(
    experiment, ingest_token, settings, monkeypatch
):
    StageFactory(campaign=CampaignFactory(experiment=experiment, name="mc"), name="gen")
    settings.PRODMON_INGEST_CAPACITY = 5
    # Pin the clock so both requests fall in the same one-second window.
    monkeypatch.setattr("logserver.throttles.time.time", lambda: 1_800_000_000.5)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {ingest_token[1]}")
    events = [dict(_start_body(), type="start") for _ in range(5)]
    first = client.post(
        "/api/v1/ingest/bulk/", data=json.dumps({"events": events}), content_type="application/json"
    )
    after = _post(client, _start_body())
    # The batch filled the window; a single event in the same second is shed.
    assert first.status_code == 200
    assert first.json()["accepted"] == 5
    assert after.status_code == 429
    assert after["Retry-After"] == "1"
