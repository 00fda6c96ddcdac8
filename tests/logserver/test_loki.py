"""The Loki-compatible push endpoint, fed real Loki JSON push bodies."""

import base64
import datetime as dt
import gzip
import json
import uuid

import pytest
from django.test import Client

from logserver import selectors
from logserver.models import IngestEvent, LogChunk
from prodmon.models import Attempt, Job
from tests.factories import CampaignFactory, StageFactory, make_token

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


UNSEEN = "6f9619ff-8b86-d011-b42d-00c04fc964ff"


def test_it_names_the_label_that_is_missing_or_wrong(bearer, make_attempt, other_experiment):
    attempt = make_attempt()
    r = _push(bearer, _body(attempt, ["x"], attempt=None))
    assert r.status_code == 400
    assert "attempt" in r.json()["fields"]
    r = _push(bearer, _body(attempt, ["x"], attempt="not-a-uid"))
    assert r.status_code == 400
    assert "attempt" in r.json()["fields"]
    r = _push(bearer, _body(attempt, ["x"], campaign="other-campaign"))
    assert r.status_code == 409
    assert "campaign" in r.json()["fields"]
    r = _push(bearer, _body(attempt, ["x"], stage="reco"))
    assert r.status_code == 409
    assert "stage" in r.json()["fields"]
    assert LogChunk.objects.count() == 0


@pytest.mark.parametrize("missing", ["campaign", "stage", "job"])
def test_an_unseen_attempt_without_its_identity_labels_is_400_naming_the_label(
    bearer, make_attempt, missing
):
    attempt = make_attempt()
    r = _push(bearer, _body(attempt, ["x"], attempt=UNSEEN, **{missing: None}))
    assert r.status_code == 400, r.content
    body = r.json()
    assert list(body["fields"]) == [f"prodmon_{missing}"]
    assert f"label prodmon_{missing}" in body["message"]
    assert "is not known yet" in body["message"]
    assert not Attempt.objects.filter(uid=UNSEEN).exists()
    assert LogChunk.objects.count() == 0


def test_an_unseen_attempt_in_an_unknown_campaign_or_stage_is_404_naming_it(bearer, make_attempt):
    attempt = make_attempt()
    r = _push(bearer, _body(attempt, ["x"], attempt=UNSEEN, campaign="nosuch"))
    assert r.status_code == 404
    assert list(r.json()["fields"]) == ["campaign"]
    assert "no campaign 'nosuch'" in r.json()["message"]
    r = _push(bearer, _body(attempt, ["x"], attempt=UNSEEN, stage="nosuch"))
    assert r.status_code == 404
    assert list(r.json()["fields"]) == ["stage"]
    assert not Attempt.objects.filter(uid=UNSEEN).exists()


def test_a_bad_stream_refuses_the_whole_push_and_keeps_nothing(bearer, make_attempt):
    attempt = make_attempt()
    good = _body(attempt, ["good"])
    # A creatable unseen attempt, then one in a stage that does not exist.
    created = _body(attempt, ["new"], attempt=str(uuid.uuid4()), prodmon_job="new_job.root")
    bad = _body(attempt, ["bad"], attempt=UNSEEN, stage="nosuch")
    r = _push(bearer, {"streams": good["streams"] + created["streams"] + bad["streams"]})
    assert r.status_code == 404
    assert Attempt.objects.get(pk=attempt.pk).log_bytes == 0
    assert LogChunk.objects.count() == 0
    assert not Job.objects.filter(key="new_job.root").exists()
    assert Attempt.objects.count() == 1


def test_a_token_never_reaches_another_experiment_s_attempt(make_attempt, other_experiment):
    attempt = make_attempt()
    _, raw = make_token(other_experiment)
    other = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    # The uid is dune's: mu2e's token cannot append to it nor create it in mu2e,
    # whatever campaign and stage mu2e has, and the answer says nothing of the job.
    for round_ in range(2):
        if round_:
            StageFactory(
                campaign=CampaignFactory(experiment=other_experiment, name="mc"), name="gen"
            )
        r = _push(other, _body(attempt, ["intrusion"]))
        assert r.status_code == 409
        assert list(r.json()["fields"]) == ["attempt"]
        assert "belongs to another job" in r.json()["message"]
    assert LogChunk.objects.count() == 0
    assert Job.objects.filter(stage__campaign__experiment=other_experiment).count() == 0


# What Fluent Bit's `loki` output (JSON, `line_format json` off) and Vector's
# `loki` sink (`compression = "gzip"`) send: labels only, the shipper's own
# `job`, no start event ever. Promtail and Alloy send snappy protobuf: 415 below.
SHIPPER_LABELS = {
    "job": "fluentbit",
    "prodmon_campaign": "mc",
    "prodmon_stage": "gen",
    "prodmon_job": "gen_00042.root",
    "prodmon_attempt": "0b7e7d0c-2f1b-4d8a-9f43-7b0a3d2b9c11",
    "host": "wn17.fnal.gov",
    "site": "FNAL",
    "filename": "/srv/condor/execute/dir_4242/_condor_stdout",
}


def test_a_shipper_s_push_for_an_unseen_attempt_creates_it_from_its_labels(
    bearer, stage, experiment, django_capture_on_commit_callbacks
):
    body = {
        "streams": [
            {
                "stream": SHIPPER_LABELS,
                "values": [
                    [str(T0), "%MSG-i RootInput: Begin processing the 1st record."],
                    [str(T0 + 1_000_000_000), "Fatal Root Error: @SUB=TFile::TFile"],
                ],
            }
        ]
    }
    with django_capture_on_commit_callbacks(execute=True):
        r = _push(bearer, body, gz=True)
    assert r.status_code == 204, r.content
    attempt = Attempt.objects.select_related("job__stage__campaign", "node").get(
        uid=SHIPPER_LABELS["prodmon_attempt"]
    )
    assert attempt.job.key == "gen_00042.root"
    assert attempt.job.stage == stage
    assert attempt.number == 1
    assert attempt.status == Attempt.Status.RUNNING
    assert (attempt.node.hostname, attempt.node.site) == ("wn17.fnal.gov", "FNAL")
    assert attempt.started_at == dt.datetime(2025, 3, 1, 14, 3, 22, tzinfo=dt.UTC)
    assert _log(attempt) == (
        b"%MSG-i RootInput: Begin processing the 1st record.\nFatal Root Error: @SUB=TFile::TFile\n"
    )
    hits = selectors.log_search(experiment_ids={experiment.pk}, text="tfile").hits
    assert [(h.attempt.pk, h.line_no) for h in hits] == [(attempt.pk, 2)]
    # The next batch goes to the same attempt; the reporter's start event,
    # arriving late, finds it too.
    more = {"streams": [{"stream": SHIPPER_LABELS, "values": [[str(T0 + 2 * 10**9), "end"]]}]}
    assert _push(bearer, more).status_code == 204
    assert Attempt.objects.filter(job=attempt.job).count() == 1
    assert _log(attempt).endswith(b"TFile::TFile\nend\n")


def test_an_unseen_attempt_without_a_host_is_created_as_a_heartbeat_would(
    bearer, stage, make_attempt
):
    labels = {k: v for k, v in SHIPPER_LABELS.items() if k not in ("host", "site")}
    r = _push(bearer, {"streams": [{"stream": labels, "values": [[str(T0), "line"]]}]})
    assert r.status_code == 204, r.content
    attempt = Attempt.objects.get(uid=labels["prodmon_attempt"])
    assert attempt.node_id is None
    assert attempt.status == Attempt.Status.RUNNING
    assert attempt.last_heartbeat_at == dt.datetime(2025, 3, 1, 14, 3, 22, tzinfo=dt.UTC)
    assert _log(attempt) == b"line\n"


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
