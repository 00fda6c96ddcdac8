"""The Loki-compatible push endpoint, fed real Loki JSON push bodies."""

import base64
import datetime as dt
import gzip
import json

import pytest
from django.test import Client

from logserver import selectors
from logserver.models import IngestEvent, LogChunk
from prodmon.models import Attempt
from tests.factories import make_token

pytestmark = pytest.mark.django_db
PUSH = "/loki/api/v1/push"
T0 = 1_740_837_802_000_000_000  # 2025-03-01T14:03:22Z in ns


def _body(target, lines, **labels):
    stream = {
        "campaign": target.job.stage.campaign.name,
        "stage": target.job.stage.name,
        "job": target.job.key,
        "attempt": str(target.uid),
        "host": "wn01.fnal.gov",
        "filename": "/srv/job/stdout",
    }
    stream.update(labels)
    stream = {k: v for k, v in stream.items() if v is not None}
    values = [[str(T0 + i * 1_000_000), line] for i, line in enumerate(lines)]
    return {"streams": [{"stream": stream, "values": values}]}


def _push(client, body, *, gz=False, content_type="application/json"):
    raw = json.dumps(body).encode()
    headers = {}
    if gz:
        raw = gzip.compress(raw)
        headers["HTTP_CONTENT_ENCODING"] = "gzip"
    return client.post(PUSH, data=raw, content_type=content_type, **headers)


def _log(attempt) -> bytes:
    attempt.refresh_from_db()
    pieces = list(selectors.log_pieces(attempt_id=attempt.pk, start=0, end=attempt.log_bytes))
    assert not any(p.is_gap for p in pieces)
    return b"".join(p.data for p in pieces)


@pytest.fixture
def bearer(ingest_token):
    return Client(HTTP_AUTHORIZATION=f"Bearer {ingest_token[1]}")


@pytest.fixture
def basic(ingest_token):
    pair = base64.b64encode(f"dune:{ingest_token[1]}".encode()).decode()
    return Client(HTTP_AUTHORIZATION=f"Basic {pair}")


def test_it_appends_pushed_lines_to_the_attempt_s_log(bearer, make_attempt):
    attempt = make_attempt()
    r = _push(bearer, _body(attempt, ["Begin processing", "event 1 done\n"]))
    assert r.status_code == 204, r.content
    assert r.content == b""
    r = _push(bearer, _body(attempt, ["Art has completed"]))
    assert r.status_code == 204
    assert _log(attempt) == b"Begin processing\nevent 1 done\nArt has completed\n"
    first = LogChunk.objects.filter(attempt=attempt).order_by("offset").first()
    assert first.logged_at == dt.datetime(2025, 3, 1, 14, 3, 22, tzinfo=dt.UTC)


def test_it_accepts_a_gzip_body_with_basic_auth(basic, make_attempt):
    attempt = make_attempt()
    r = _push(basic, _body(attempt, ["from fluent bit"]), gz=True)
    assert r.status_code == 204, r.content
    assert _log(attempt) == b"from fluent bit\n"


def test_a_resent_identical_batch_is_not_appended_twice(bearer, make_attempt):
    attempt = make_attempt()
    body = _body(attempt, ["only once", "really"])
    assert _push(bearer, body).status_code == 204
    assert _push(bearer, body, gz=True).status_code == 204
    assert _log(attempt) == b"only once\nreally\n"
    assert IngestEvent.objects.filter(kind="loki").count() == 1


def test_it_takes_prodmon_labels_before_a_shipper_s_own_job_label(bearer, make_attempt):
    attempt = make_attempt()
    body = _body(
        attempt,
        ["aliases"],
        campaign=None,
        attempt=None,
        job="varlogs",
        prodmon_job=attempt.job.key,
        prodmon_attempt=str(attempt.uid),
    )
    assert _push(bearer, body).status_code == 204
    assert _log(attempt) == b"aliases\n"


def test_it_names_the_label_that_is_missing_or_wrong(bearer, make_attempt, other_experiment):
    attempt = make_attempt()
    r = _push(bearer, _body(attempt, ["x"], attempt=None))
    assert r.status_code == 400
    assert "attempt" in r.json()["fields"]
    r = _push(bearer, _body(attempt, ["x"], attempt="not-a-uid"))
    assert r.status_code == 400
    assert "attempt" in r.json()["fields"]
    r = _push(bearer, _body(attempt, ["x"], attempt="6f9619ff-8b86-d011-b42d-00c04fc964ff"))
    assert r.status_code == 404
    assert "label attempt" in r.json()["message"]
    r = _push(bearer, _body(attempt, ["x"], campaign="other-campaign"))
    assert r.status_code == 409
    assert "campaign" in r.json()["fields"]
    r = _push(bearer, _body(attempt, ["x"], stage="reco"))
    assert r.status_code == 409
    assert "stage" in r.json()["fields"]
    assert LogChunk.objects.count() == 0


def test_a_bad_stream_refuses_the_whole_push(bearer, make_attempt):
    attempt = make_attempt()
    good = _body(attempt, ["good"])
    bad = _body(attempt, ["bad"], attempt="6f9619ff-8b86-d011-b42d-00c04fc964ff")
    r = _push(bearer, {"streams": good["streams"] + bad["streams"]})
    assert r.status_code == 404
    assert Attempt.objects.get(pk=attempt.pk).log_bytes == 0


def test_a_token_never_reaches_another_experiment_s_attempt(make_attempt, other_experiment):
    attempt = make_attempt()
    _, raw = make_token(other_experiment)
    r = _push(Client(HTTP_AUTHORIZATION=f"Bearer {raw}"), _body(attempt, ["intrusion"]))
    assert r.status_code == 404
    assert LogChunk.objects.count() == 0


def test_it_refuses_protobuf_with_a_415_that_says_to_use_json(bearer, make_attempt):
    r = bearer.post(PUSH, data=b"\x1f\x8b snappy", content_type="application/x-protobuf")
    assert r.status_code == 415
    assert "JSON" in r.json()["message"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"streams": "nope"}, "streams"),
        ({"streams": [{"stream": {"a": 1}, "values": []}]}, "streams[0].stream"),
        ({"streams": [{"stream": {}, "values": [["now", "x"]]}]}, "streams[0].values[0]"),
        ({"streams": [{"stream": {}, "values": [["1", 5]]}]}, "streams[0].values[0]"),
    ],
)
def test_it_names_the_malformed_field(bearer, payload, field):
    r = _push(bearer, payload)
    assert r.status_code == 400
    assert field in r.json()["fields"]


def test_it_refuses_bad_credentials(make_attempt, ingest_token):
    attempt = make_attempt()
    body = _body(attempt, ["x"])
    assert _push(Client(), body).status_code == 401
    wrong = base64.b64encode(b"dune:hunter2").decode()
    r = _push(Client(HTTP_AUTHORIZATION=f"Basic {wrong}"), body)
    assert r.status_code == 401
    assert "ingest token" in r.json()["message"]
    _, reader = make_token(ingest_token[0].experiment, scopes=("read",), name="reader")
    assert _push(Client(HTTP_AUTHORIZATION=f"Bearer {reader}"), body).status_code == 403


def test_an_oversize_or_bomb_body_is_413(bearer, make_attempt, settings):
    settings.INGEST_MAX_BODY_BYTES = 50_000
    attempt = make_attempt()
    r = _push(bearer, _body(attempt, ["0" * 4_000_000]), gz=True)
    assert r.status_code == 413


def test_pushed_lines_become_searchable(
    bearer, make_attempt, experiment, django_capture_on_commit_callbacks
):
    attempt = make_attempt()
    with django_capture_on_commit_callbacks(execute=True):
        _push(bearer, _body(attempt, ["first line", "Fatal Root Error: @SUB=TFile"]))
    result = selectors.log_search(experiment_ids={experiment.pk}, text="tfile")
    assert [(h.attempt.pk, h.line_no) for h in result.hits] == [(attempt.pk, 2)]
