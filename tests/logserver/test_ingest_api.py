"""The ingestion API: auth and scoping, validation, idempotency, limits."""

import base64
import gzip
import json
import uuid

import pytest
from django.test import Client
from django.utils import timezone

from logserver.models import IngestEvent, LogChunk
from logserver.services import token_revoke
from prodmon.models import Attempt, Job, OutputFile
from tests.factories import CampaignFactory, StageFactory, make_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def stage(experiment):
    return StageFactory(campaign=CampaignFactory(experiment=experiment, name="mc"), name="gen")


@pytest.fixture
def client_for(ingest_token):
    def build(raw=None):
        return Client(HTTP_AUTHORIZATION=f"Bearer {raw or ingest_token[1]}")

    return build


@pytest.fixture
def api(client_for):
    return client_for()


def ident(attempt=None, **extra):
    body = {
        "event_id": uuid.uuid4().hex,
        "campaign": "mc",
        "stage": "gen",
        "job": "input_001.root",
        "attempt": str(attempt or uuid.uuid4()),
    }
    body.update(extra)
    return body


def post(client, kind, body, **headers):
    return client.post(
        f"/api/v1/ingest/{kind}/",
        data=json.dumps(body),
        content_type="application/json",
        **headers,
    )


def test_it_records_a_whole_attempt(api, stage):
    uid = uuid.uuid4()
    r = post(api, "start", ident(uid, host="wn01.fnal.gov", site="FNAL", node={"cvmfs": True}))
    assert r.status_code == 201, r.content
    assert r.json()["attempt_number"] == 1
    r = post(
        api,
        "heartbeat",
        ident(uid, metrics={"cpu_s": 4, "wall_s": 8}, log={"offset": 0, "data": "line 1\n"}),
    )
    assert r.status_code == 201
    r = post(
        api,
        "end",
        ident(
            uid,
            exit_code=0,
            metrics={"cpu_s": 9, "wall_s": 10, "peak_rss_bytes": 2048, "events_processed": 50},
            log={"offset": 7, "data": "done\n"},
            outputs=[{"name": "out.root", "size": 123, "checksum": "adler32:0a1b2c3d"}],
        ),
    )
    assert r.status_code == 201
    attempt = Attempt.objects.get(uid=uid)
    assert attempt.status == "succeeded"
    assert attempt.node.hostname == "wn01.fnal.gov"
    assert attempt.node.site == "FNAL"
    assert attempt.node.properties == {"cvmfs": True}
    assert attempt.cpu_efficiency == pytest.approx(0.9)
    assert attempt.peak_rss_bytes == 2048
    assert attempt.events_processed == 50
    assert attempt.log_bytes == 12
    assert b"".join(bytes(c.data) for c in LogChunk.objects.filter(attempt=attempt)) == (
        b"line 1\ndone\n"
    )
    out = OutputFile.objects.get(attempt=attempt)
    assert (out.size, out.checksum, out.stage_id, out.campaign_id) == (
        123,
        "adler32:0a1b2c3d",
        stage.pk,
        stage.campaign_id,
    )
    job = attempt.job
    assert job.state == "succeeded"
    assert job.good_attempt_id == attempt.pk


def test_it_acknowledges_a_resent_event_without_applying_it_twice(api, stage):
    uid = uuid.uuid4()
    post(api, "start", ident(uid, host="wn01"))
    beat = ident(uid, metrics={"cpu_s": 1}, log={"offset": 0, "data": "abc"})
    first, again = post(api, "heartbeat", beat), post(api, "heartbeat", beat)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["status"] == "duplicate"
    assert IngestEvent.objects.filter(event_id=beat["event_id"]).count() == 1
    assert LogChunk.objects.filter(attempt__uid=uid).count() == 1


def test_it_deduplicates_event_ids_per_experiment_not_globally(api, stage, other_experiment):
    StageFactory(campaign=CampaignFactory(experiment=other_experiment, name="mc"), name="gen")
    _, raw_b = make_token(other_experiment)
    body = ident(host="wn01")
    other = dict(body, attempt=str(uuid.uuid4()))
    assert post(api, "start", body).status_code == 201
    assert post(Client(HTTP_AUTHORIZATION=f"Bearer {raw_b}"), "start", other).status_code == 201


def test_it_records_a_second_success_as_a_duplicate_completion(api, stage):
    first, second = uuid.uuid4(), uuid.uuid4()
    for uid in (first, second):
        post(api, "start", ident(uid, host="wn01"))
    post(api, "end", ident(first, exit_code=0))
    r = post(api, "end", ident(second, exit_code=0))
    assert "duplicate completion" in r.json()["note"]
    job = Job.objects.get(key="input_001.root")
    assert job.state == "succeeded"
    assert job.duplicate_completions == 1
    assert job.good_attempt.uid == first
    assert Attempt.objects.get(uid=second).is_duplicate_completion is True
    assert Job.objects.filter(stage=stage, state="succeeded").count() == 1


def test_it_keeps_the_first_end_of_an_attempt(api, stage):
    uid = uuid.uuid4()
    post(api, "end", ident(uid, exit_code=3))
    r = post(api, "end", ident(uid, exit_code=0))
    assert r.status_code == 201
    assert "first end event stands" in r.json()["note"]
    attempt = Attempt.objects.get(uid=uid)
    assert (attempt.status, attempt.exit_code) == ("failed", 3)


def test_it_accepts_an_end_before_its_start_without_reopening(api, stage):
    uid = uuid.uuid4()
    post(api, "end", ident(uid, signal=9, metrics={"wall_s": 60}))
    post(api, "start", ident(uid, host="wn02", site="CERN"))
    attempt = Attempt.objects.get(uid=uid)
    assert attempt.status == "failed"
    assert attempt.signal == 9
    assert attempt.node.hostname == "wn02"
    assert attempt.job.state == "failed"


def test_it_marks_a_queued_attempt_running_on_a_heartbeat(api, stage):
    uid = uuid.uuid4()
    post(api, "heartbeat", ident(uid, metrics={"cpu_s": 1, "wall_s": 2}))
    assert Attempt.objects.get(uid=uid).status == "running"


def test_it_stores_undecodable_log_bytes_losslessly(api, stage):
    uid = uuid.uuid4()
    raw = b"ok \xff\xfe bad \x00 nul\n"
    data = base64.b64encode(raw).decode()
    r = post(api, "heartbeat", ident(uid, log={"offset": 0, "data_b64": data}))
    assert r.status_code == 201
    assert bytes(LogChunk.objects.get(attempt__uid=uid).data) == raw


def test_it_names_the_bad_field(api, stage):
    r = post(api, "end", ident(exit_code="three"))
    assert r.status_code == 400
    assert r.json()["error"] == "invalid"
    assert "exit_code" in r.json()["fields"]


def test_it_names_nested_bad_fields(api, stage):
    r = post(api, "end", ident(exit_code=0, outputs=[{"name": "a", "size": -1}]))
    assert r.status_code == 400
    assert "outputs[0].size" in r.json()["fields"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"host": "wn\x00"}, "host"),
        ({"host": "wn", "node": {"os": {"nested": 1}}}, "node"),
        ({"host": "wn", "cores": 10**30}, "cores"),
        ({"host": "wn", "attempt": "not-a-uuid"}, "attempt"),
        ({"host": "wn", "event_id": "x"}, "event_id"),
        ({"host": "wn", "time": "yesterday"}, "time"),
    ],
)
def test_it_refuses_bad_start_fields(api, stage, body, field):
    r = post(api, "start", ident(**body))
    assert r.status_code == 400, r.content
    assert field in r.json()["fields"]
    assert not Attempt.objects.exists()


def test_it_needs_exit_code_or_signal_at_end(api, stage):
    r = post(api, "end", ident())
    assert r.status_code == 400
    assert "exit_code" in r.json()["fields"]


def test_it_answers_unknown_campaign_and_stage_with_a_named_404(api, stage):
    r = post(api, "start", ident(host="wn", campaign="nope"))
    assert r.status_code == 404
    assert "campaign" in r.json()["fields"]
    r = post(api, "start", ident(host="wn", stage="nope"))
    assert r.status_code == 404
    assert "stage" in r.json()["fields"]


def test_it_refuses_an_attempt_uid_of_another_job(api, stage):
    uid = uuid.uuid4()
    post(api, "start", ident(uid, host="wn"))
    r = post(api, "heartbeat", ident(uid, job="other.root"))
    assert r.status_code == 409
    assert "attempt" in r.json()["fields"]


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"a": NaN}', "not valid JSON"),
        (b'{"a": "\xff"}', "not UTF-8"),
        (b"[" * 200 + b"]" * 200, "nested deeper"),
    ],
)
def test_it_refuses_malformed_bodies_with_a_clear_400(api, stage, payload, fragment):
    r = api.post("/api/v1/ingest/start/", data=payload, content_type="application/json")
    assert r.status_code == 400
    assert fragment in r.json()["message"]


def test_it_accepts_a_gzip_body(api, stage):
    body = gzip.compress(json.dumps(ident(host="wn-gz")).encode())
    r = api.post(
        "/api/v1/ingest/start/",
        data=body,
        content_type="application/json",
        HTTP_CONTENT_ENCODING="gzip",
    )
    assert r.status_code == 201, r.content
    assert Attempt.objects.get().node.hostname == "wn-gz"


def test_it_answers_413_for_an_oversize_body(api, stage, settings):
    settings.INGEST_MAX_BODY_BYTES = 1000
    r = post(api, "heartbeat", ident(log={"offset": 0, "data": "x" * 2000}))
    assert r.status_code == 413
    assert r.json()["error"] == "payload_too_large"
    assert "1000" in r.json()["message"]
    assert not Attempt.objects.exists()


def test_it_answers_413_for_a_gzip_bomb(api, stage, settings):
    settings.INGEST_MAX_BODY_BYTES = 100_000
    bomb = gzip.compress(b'{"a": "' + b"0" * 5_000_000 + b'"}')
    assert len(bomb) < 100_000
    r = api.post(
        "/api/v1/ingest/start/",
        data=bomb,
        content_type="application/json",
        HTTP_CONTENT_ENCODING="gzip",
    )
    assert r.status_code == 413


def test_it_refuses_a_log_chunk_over_the_chunk_limit(api, stage, settings):
    settings.INGEST_MAX_CHUNK_BYTES = 10
    r = post(api, "heartbeat", ident(log={"offset": 0, "data": "x" * 11}))
    assert r.status_code == 400
    assert "log.data" in r.json()["fields"]


def test_the_rate_window_opens_again_and_retry_after_says_when(
    api, stage, settings, monkeypatch
):
    from django.core.cache import cache

    cache.clear()
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"ingest": "2/min"},
    }
    clock = [1_800_000_000.0 + 15]  # 15 s into a minute window
    monkeypatch.setattr("logserver.throttles.time.time", lambda: clock[0])
    codes = [post(api, "start", ident(host="wn")).status_code for _ in range(3)]
    assert codes == [201, 201, 429]
    clock[0] += 20
    r = post(api, "start", ident(host="wn"))
    assert r.status_code == 429
    assert int(r["Retry-After"]) == 25  # the window ends 60 s after it began
    clock[0] += 25
    assert post(api, "start", ident(host="wn")).status_code == 201


def test_it_answers_429_with_retry_after_over_the_rate(api, stage, settings):
    from django.core.cache import cache

    cache.clear()
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"ingest": "3/min"},
    }
    codes = [post(api, "start", ident(host="wn")).status_code for _ in range(4)]
    assert codes[:3] == [201, 201, 201]
    assert codes[3] == 429
    r = post(api, "start", ident(host="wn"))
    assert int(r["Retry-After"]) > 0
    assert r.json()["error"] == "throttled"
    cache.clear()


def test_it_refuses_requests_without_a_valid_token(stage, client_for):
    assert post(Client(), "start", ident(host="wn")).status_code in (401, 403)
    r = post(client_for("pm_notarealtoken"), "start", ident(host="wn"))
    assert r.status_code == 401
    assert "unknown ingest token" in r.json()["message"]


def test_it_stops_a_revoked_token_on_the_next_request(api, stage, ingest_token):
    assert post(api, "start", ident(host="wn")).status_code == 201
    token_revoke(token=ingest_token[0])
    r = post(api, "start", ident(host="wn"))
    assert r.status_code == 401
    assert "revoked" in r.json()["message"]


def test_it_needs_the_ingest_scope(experiment, stage):
    _, raw = make_token(experiment, scopes=("read",), name="reader")
    r = post(Client(HTTP_AUTHORIZATION=f"Bearer {raw}"), "start", ident(host="wn"))
    assert r.status_code == 403


def test_a_token_of_one_experiment_can_never_write_another(stage, other_experiment):
    CampaignFactory(experiment=other_experiment, name="other-mc")
    _, raw_b = make_token(other_experiment)
    client_b = Client(HTTP_AUTHORIZATION=f"Bearer {raw_b}")
    # B names A's campaign: it does not exist in B, so nothing is written to A.
    r = post(client_b, "start", ident(host="wn"))
    assert r.status_code == 404
    assert not Attempt.objects.exists()


def test_a_token_of_one_experiment_can_never_touch_another_s_attempt(api, stage, other_experiment):
    uid = uuid.uuid4()
    post(api, "start", ident(uid, host="wn"))
    StageFactory(campaign=CampaignFactory(experiment=other_experiment, name="mc"), name="gen")
    _, raw_b = make_token(other_experiment, scopes=("ingest", "read"))
    client_b = Client(HTTP_AUTHORIZATION=f"Bearer {raw_b}")
    r = post(client_b, "end", ident(uid, exit_code=0))
    assert r.status_code == 409
    assert Attempt.objects.get(uid=uid).status == "running"
    assert client_b.get(f"/api/v1/attempts/{uid}/").status_code == 404
    assert api.get(f"/api/v1/attempts/{uid}/").json()["status"] == "running"


def test_bulk_answers_each_event_in_order(api, stage):
    uid = uuid.uuid4()
    start = dict(ident(uid, host="wn"), type="start")
    events = [
        start,
        dict(ident(uid, metrics={"cpu_s": 1}), type="heartbeat"),
        {"type": "end", "event_id": "bad-end-0001"},
        {"type": "explode"},
        start,
    ]
    r = api.post(
        "/api/v1/ingest/bulk/", data=json.dumps({"events": events}), content_type="application/json"
    )
    assert r.status_code == 200
    body = r.json()
    assert [x["status"] for x in body["results"]] == [
        "accepted",
        "accepted",
        "rejected",
        "rejected",
        "duplicate",
    ]
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (2, 1, 2)
    assert "campaign" in body["results"][2]["fields"]
    assert body["results"][2]["event_id"] == "bad-end-0001"
    assert IngestEvent.objects.count() == 2


def test_bulk_refuses_too_many_events_with_413(api, stage, settings):
    settings.INGEST_MAX_BULK_EVENTS = 2
    events = [dict(ident(host="wn"), type="start") for _ in range(3)]
    r = api.post(
        "/api/v1/ingest/bulk/", data=json.dumps({"events": events}), content_type="application/json"
    )
    assert r.status_code == 413
    assert "limit of 2" in r.json()["message"]
    assert not Attempt.objects.exists()


def test_it_uses_the_client_time_for_the_attempt(api, stage):
    uid = uuid.uuid4()
    when = timezone.now().replace(microsecond=0) - timezone.timedelta(hours=3)
    post(api, "start", ident(uid, host="wn", time=when.isoformat()))
    assert Attempt.objects.get(uid=uid).started_at == when


def test_the_openapi_schema_is_served_and_lists_the_ingest_endpoints(client):
    r = client.get("/api/v1/schema/", HTTP_ACCEPT="application/json")
    assert r.status_code == 200
    schema = json.loads(r.content)
    for path in ("start", "heartbeat", "end", "bulk"):
        assert f"/api/v1/ingest/{path}/" in schema["paths"]
    assert "ingestToken" in schema["components"]["securitySchemes"]


def test_the_openapi_schema_generates_without_warnings(capsys):
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")
