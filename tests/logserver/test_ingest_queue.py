"""The queued ingest mode: one durable INSERT per request, applied in batches
by the real drain (logserver.queue) on the test database."""

import datetime as dt
import io
import json
import threading
import uuid

import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.test import Client
from django.test.utils import CaptureQueriesContext

from logserver import queue
from logserver.models import IngestEvent, LogChunk
from prodmon.models import Attempt, Job
from tests.conftest import uses_postgres
from tests.factories import CampaignFactory, StageFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def queued(settings):
    settings.PRODMON_INGEST_MODE = "queued"


@pytest.fixture
def stage(experiment):
    return StageFactory(campaign=CampaignFactory(experiment=experiment, name="mc"), name="gen")


@pytest.fixture
def api(ingest_token):
    return Client(HTTP_AUTHORIZATION=f"Bearer {ingest_token[1]}")


def ident(attempt, job="input_001.root", **extra):
    return {
        "event_id": uuid.uuid4().hex,
        "campaign": "mc",
        "stage": "gen",
        "job": job,
        "attempt": str(attempt),
        **extra,
    }


def post(client, kind, body):
    return client.post(
        f"/api/v1/ingest/{kind}/", data=json.dumps(body), content_type="application/json"
    )


def whole_attempt(uid, job="input_001.root", exit_code=0):
    return [
        ("start", ident(uid, job, host="wn01.fnal.gov", site="FNAL")),
        (
            "heartbeat",
            ident(uid, job, metrics={"cpu_s": 4, "wall_s": 8}, log={"offset": 0, "data": "one\n"}),
        ),
        (
            "end",
            ident(
                uid,
                job,
                exit_code=exit_code,
                metrics={"cpu_s": 9, "wall_s": 10, "peak_rss_bytes": 2048},
                log={"offset": 4, "data": "two\n"},
                outputs=[{"name": f"{job}.out", "size": 123, "checksum": "adler32:0a1b2c3d"}],
            ),
        ),
    ]


def test_a_request_only_queues_and_the_drain_applies_it(api, stage):
    uid = uuid.uuid4()
    for kind, body in whole_attempt(uid):
        r = post(api, kind, body)
        assert r.status_code == 202, r.content
        assert r.json() == {"event_id": body["event_id"], "status": "accepted", "queued": True}
    assert not Attempt.objects.exists()
    assert list(IngestEvent.objects.values_list("state", flat=True)) == ["queued"] * 3
    assert queue.queue_stats().queued == 3

    result = queue.queue_drain()

    assert (result.applied, result.rejected, result.busy) == (3, 0, False)
    attempt = Attempt.objects.get(uid=uid)
    assert attempt.exit_code == 0
    assert attempt.ended_at is not None
    assert attempt.cpu_s == 9
    assert attempt.peak_rss_bytes == 2048
    assert attempt.job.state == Job.State.SUCCEEDED
    assert attempt.outputs.get().name == "input_001.root.out"
    assert (
        b"".join(
            LogChunk.objects.filter(attempt=attempt)
            .order_by("offset")
            .values_list("data", flat=True)
        )
        == b"one\ntwo\n"
    )
    events = IngestEvent.objects.all()
    assert {(e.state, e.attempt_id, e.payload) for e in events} == {("applied", attempt.pk, None)}
    assert all(e.applied_at is not None for e in events)
    assert queue.queue_stats().queued == 0
    assert queue.queue_drain().done == 0


def test_an_event_without_a_time_keeps_the_time_it_was_received(api, stage):
    uid = uuid.uuid4()
    post(api, "start", whole_attempt(uid)[0][1])
    received = IngestEvent.objects.get().received_at
    queue.queue_drain()
    assert Attempt.objects.get(uid=uid).started_at == received


def test_a_resent_event_is_a_duplicate_while_queued_and_applied_once(api, stage):
    uid = uuid.uuid4()
    start = whole_attempt(uid)[0][1]
    assert post(api, "start", start).status_code == 202
    again = post(api, "start", start)
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"
    queue.queue_drain()
    assert post(api, "start", start).json()["status"] == "duplicate"
    assert Attempt.objects.filter(uid=uid).count() == 1
    assert IngestEvent.objects.count() == 1


def test_bad_input_is_still_refused_at_once_and_nothing_is_queued(api, stage):
    body = ident(uuid.uuid4(), metrics={"cpu_s": -1})
    r = post(api, "heartbeat", body)
    assert r.status_code == 400
    assert "metrics.cpu_s" in r.json()["fields"]
    assert not IngestEvent.objects.exists()


def test_an_event_the_drain_cannot_apply_is_rejected_with_its_reason_and_kept(
    api, stage, experiment
):
    good, orphan = uuid.uuid4(), uuid.uuid4()
    events = whole_attempt(good)
    bad = ident(orphan, campaign="nope", host="wn02", site="FNAL")
    post(api, "start", events[0][1])
    post(api, "start", bad)
    for kind, body in events[1:]:
        post(api, kind, body)

    result = queue.queue_drain()

    assert (result.applied, result.rejected) == (3, 1)
    assert Attempt.objects.get(uid=good).ended_at is not None  # the rest of the batch stands
    row = IngestEvent.objects.get(event_id=bad["event_id"])
    assert row.state == "rejected"
    assert "nope" in row.note
    assert row.note.startswith("campaign")
    assert json.loads(row.payload)["campaign"] == "nope"
    assert queue.queue_stats().rejected == 1

    # Once the cause is fixed, the kept event can be queued again and applied.
    StageFactory(campaign=CampaignFactory(experiment=experiment, name="nope"), name="gen")
    assert queue.rejected_requeue(experiment=experiment) == 1
    assert queue.queue_drain().applied == 1
    assert Attempt.objects.filter(uid=orphan, job__stage__campaign__name="nope").exists()
    assert IngestEvent.objects.get(event_id=bad["event_id"]).state == "applied"


def test_many_attempts_in_one_batch_are_applied_in_arrival_order(api, stage):
    uids = [uuid.uuid4() for _ in range(6)]
    streams = [whole_attempt(u, job=f"in_{i}.root", exit_code=i % 2) for i, u in enumerate(uids)]
    # Interleave the attempts the way concurrent worker nodes would.
    for step in range(3):
        for stream in streams:
            kind, body = stream[step]
            assert post(api, kind, body).status_code == 202

    assert queue.queue_drain(limit=7).applied == 7  # batches cut anywhere keep the order
    assert queue.queue_drain_all().applied == 11

    for i, uid in enumerate(uids):
        attempt = Attempt.objects.get(uid=uid)
        assert attempt.exit_code == i % 2
        assert attempt.cpu_s == 9  # the end's metrics, applied after the heartbeat's
        expected = Job.State.SUCCEEDED if i % 2 == 0 else Job.State.FAILED
        assert attempt.job.state == expected


def test_bulk_validates_each_event_and_queues_the_valid_ones_in_one_go(api, stage):
    uid = uuid.uuid4()
    start, heartbeat, end = (dict(body, type=kind) for kind, body in whole_attempt(uid))
    invalid = dict(ident(uid), type="heartbeat", metrics={"wall_s": "x"})
    r = api.post(
        "/api/v1/ingest/bulk/",
        data=json.dumps({"events": [start, invalid, heartbeat, start, end]}),
        content_type="application/json",
    )
    assert r.status_code == 200, r.content
    body = r.json()
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (3, 1, 1)
    assert [x["status"] for x in body["results"]] == [
        "accepted",
        "rejected",
        "accepted",
        "duplicate",
        "accepted",
    ]
    assert "metrics.wall_s" in body["results"][1]["fields"]
    assert body["results"][0]["queued"] is True
    assert queue.queue_drain().applied == 3
    assert Attempt.objects.get(uid=uid).job.state == Job.State.SUCCEEDED


def test_the_drain_command_applies_what_is_queued(api, stage):
    for kind, body in whole_attempt(uuid.uuid4()):
        post(api, kind, body)
    out = io.StringIO()
    call_command("ingest_drain", "--once", stdout=out)
    assert out.getvalue().strip() == "applied 3, rejected 0"
    assert queue.queue_stats().queued == 0


def test_the_beat_task_drains_in_the_queued_mode_only(api, stage, settings):
    from logserver.tasks import ingest_drain_task

    post(api, "start", whole_attempt(uuid.uuid4())[0][1])
    settings.PRODMON_INGEST_MODE = "inline"
    ingest_drain_task()
    assert IngestEvent.objects.get().state == "queued"
    settings.PRODMON_INGEST_MODE = "queued"
    ingest_drain_task()
    assert IngestEvent.objects.get().state == "applied"


def test_metrics_show_the_queue(api, stage):
    for kind, body in whole_attempt(uuid.uuid4())[:2]:
        post(api, kind, body)
    text = Client().get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    assert "prodmon_ingest_queue_depth 2.0" in text
    oldest = next(
        line for line in text.splitlines() if line.startswith("prodmon_ingest_queue_oldest_seconds")
    )
    assert 0 <= float(oldest.split()[1]) < 60


def test_payload_round_trip_keeps_bytes_times_and_ids():
    data = {
        "event_id": "abcdefgh",
        "attempt": uuid.uuid4(),
        "time": dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC),
        "log": {"offset": 7, "bytes": b"\x00\xff caf\xc3\xa9\n"},
        "metrics": {"cpu_s": 1.5},
    }
    assert queue.payload_decode(queue.payload_encode(data)) == data


@pytest.mark.django_db(transaction=True)
def test_only_one_drain_runs_at_a_time(ingest_token, experiment):
    if not uses_postgres():
        pytest.skip("PostgreSQL-only test: the advisory lock (SQLite serialises writers)")
    held, release = threading.Event(), threading.Event()

    def hold_the_lock():
        conn = connections.create_connection("default")
        try:
            with conn.cursor() as cursor:
                cursor.execute("BEGIN")
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [queue.DRAIN_LOCK_KEY])
                held.set()
                release.wait(10)
                cursor.execute("COMMIT")
        finally:
            conn.close()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    try:
        assert held.wait(10)
        assert queue.queue_drain() == queue.DrainResult(busy=True)
    finally:
        release.set()
        holder.join()
    assert queue.queue_drain() == queue.DrainResult()
    connection.close()


@pytest.mark.django_db(transaction=True)  # real commits: follow-ups run on commit
def test_the_follow_ups_of_a_drained_batch_run_once_it_commits(api, stage):
    """A heartbeat revives its lost attempt; a failed end is classified
    (Celery runs eagerly in the tests: the batch's one task fans out here)."""
    from triage.models import AttemptClassification, AttemptLiveness

    lost, failed = uuid.uuid4(), uuid.uuid4()
    post(api, "start", whole_attempt(lost, job="a.root")[0][1])
    for kind, body in whole_attempt(failed, job="b.root", exit_code=65)[:2]:
        post(api, kind, body)
    queue.queue_drain()
    a = Attempt.objects.get(uid=lost)
    AttemptLiveness.objects.create(
        attempt=a, campaign=a.job.stage.campaign, state=AttemptLiveness.State.LOST
    )
    post(api, "heartbeat", whole_attempt(lost, job="a.root")[1][1])
    post(api, "end", whole_attempt(failed, job="b.root", exit_code=65)[2][1])

    assert queue.queue_drain().applied == 2

    liveness = AttemptLiveness.objects.get(attempt=a)
    assert liveness.state == AttemptLiveness.State.OK
    assert liveness.revived_at is not None
    classified = AttemptClassification.objects.get(attempt__uid=failed)
    assert classified.error_class is not None


def test_heartbeats_drained_together_keep_the_single_path_rules(api, stage, experiment):
    """Heartbeats of many attempts are applied with one UPDATE; each keeps the
    rules of the one-by-one path: a peak never drops, an older heartbeat's
    metrics do not overwrite a newer one's, an unseen attempt is created, a
    heartbeat naming another job's attempt is rejected."""
    known, unseen, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    post(api, "start", ident(known, "k.root", host="wn1"))
    post(api, "start", ident(other, "o.root", host="wn2"))
    t0 = "2026-11-28T10:00:00+00:00"
    t1 = "2026-11-28T10:05:00+00:00"
    post(
        api,
        "heartbeat",
        ident(
            known,
            "k.root",
            time=t1,
            metrics={"cpu_s": 50, "wall_s": 100, "peak_rss_bytes": 900},
            log={"offset": 0, "data": "a\n"},
        ),
    )
    queue.queue_drain()
    # Next batch: an older heartbeat of `known` (late), a first one of `unseen`,
    # and one that names `other` under the wrong job.
    post(
        api,
        "heartbeat",
        ident(
            known,
            "k.root",
            time=t0,
            metrics={"cpu_s": 10, "wall_s": 20, "peak_rss_bytes": 2000},
            log={"offset": 2, "data": "b\n"},
        ),
    )
    post(api, "heartbeat", ident(unseen, "u.root", metrics={"cpu_s": 1, "wall_s": 2}))
    wrong = ident(other, "not-its-job.root", metrics={"cpu_s": 1})
    post(api, "heartbeat", wrong)

    with CaptureQueriesContext(connection) as queries:
        result = queue.queue_drain()

    assert (result.applied, result.rejected) == (2, 1)
    batch_updates = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith("WITH v(") and "prodmon_attempt" in q["sql"]
    ]
    assert len(batch_updates) == 1  # one UPDATE for the heartbeats of known attempts
    a = Attempt.objects.get(uid=known)
    assert (a.cpu_s, a.wall_s) == (50, 100)  # the newer heartbeat's metrics stand
    assert a.peak_rss_bytes == 900  # a late heartbeat does not touch metrics
    assert a.log_bytes == 4
    assert (
        b"".join(
            LogChunk.objects.filter(attempt=a).order_by("offset").values_list("data", flat=True)
        )
        == b"a\nb\n"
    )
    u = Attempt.objects.get(uid=unseen)
    assert u.status == Attempt.Status.RUNNING
    assert u.cpu_s == 1
    assert u.job.key == "u.root"
    row = IngestEvent.objects.get(event_id=wrong["event_id"])
    assert row.state == "rejected"
    assert "belongs to another job" in row.note
    assert Attempt.objects.get(uid=other).cpu_s is None


def test_an_admin_requeues_rejected_events_and_it_is_audited(api, stage, experiment, admin_client):
    from prodmon.models import AuditEntry

    bad = ident(uuid.uuid4(), campaign="later", host="wn9")
    post(api, "start", bad)
    queue.queue_drain()
    row = IngestEvent.objects.get(event_id=bad["event_id"])
    page = admin_client.get("/admin/logserver/ingestevent/?state__exact=rejected")
    assert page.status_code == 200
    assert bad["event_id"] in page.content.decode()
    StageFactory(campaign=CampaignFactory(experiment=experiment, name="later"), name="gen")

    r = admin_client.post(
        "/admin/logserver/ingestevent/",
        {"action": "requeue", "_selected_action": [row.pk]},
    )

    assert r.status_code == 302
    assert IngestEvent.objects.get(pk=row.pk).state == "queued"
    entry = AuditEntry.objects.get(action="ingest.requeue")
    assert entry.experiment == experiment
    assert entry.params == {"events": [bad["event_id"]], "count": 1}
    assert queue.queue_drain().applied == 1


def _bad_requests(raw_token, read_only, revoked):
    good = ident(uuid.uuid4(), host="wn1")
    return {
        "no token": ({}, json.dumps(good), "application/json"),
        "unknown token": (
            {"HTTP_AUTHORIZATION": "Bearer pm_" + "x" * 43},
            json.dumps(good),
            "application/json",
        ),
        "revoked token": (
            {"HTTP_AUTHORIZATION": f"Bearer {revoked}"},
            json.dumps(good),
            "application/json",
        ),
        "read-only token": (
            {"HTTP_AUTHORIZATION": f"Bearer {read_only}"},
            json.dumps(good),
            "application/json",
        ),
        "not JSON": ({"HTTP_AUTHORIZATION": f"Bearer {raw_token}"}, "{nope", "application/json"),
        "NaN": (
            {"HTTP_AUTHORIZATION": f"Bearer {raw_token}"},
            '{"cores": NaN}',
            "application/json",
        ),
        "invalid field": (
            {"HTTP_AUTHORIZATION": f"Bearer {raw_token}"},
            json.dumps({**good, "cores": 0}),
            "application/json",
        ),
        "form body": (
            {"HTTP_AUTHORIZATION": f"Bearer {raw_token}"},
            "a=b",
            "application/x-www-form-urlencoded",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "no token",
        "unknown token",
        "revoked token",
        "read-only token",
        "not JSON",
        "NaN",
        "invalid field",
        "form body",
    ],
)
def test_the_queued_fast_path_refuses_exactly_as_the_inline_mode(
    case, stage, experiment, ingest_token, settings
):
    from logserver.services import token_revoke
    from tests.factories import make_token

    _, read_only = make_token(experiment, scopes=("read",), name="ro")
    gone, revoked = make_token(experiment, scopes=("ingest",), name="gone")
    token_revoke(token=gone)
    headers, body, content_type = _bad_requests(ingest_token[1], read_only, revoked)[case]
    answers = []
    for mode in ("inline", "queued"):
        settings.PRODMON_INGEST_MODE = mode
        r = Client().post("/api/v1/ingest/start/", data=body, content_type=content_type, **headers)
        answers.append((r.status_code, r.json()))
    assert answers[0] == answers[1]
    assert 400 <= answers[0][0] < 500
    assert not IngestEvent.objects.exists()


def test_the_queued_fast_path_answers_429_as_drf_does(api, stage, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"ingest": "2/min", "ui": "600/min"},
    }
    from django.core.cache import cache

    cache.clear()
    codes = [post(api, "start", ident(uuid.uuid4(), host="wn1")).status_code for _ in range(3)]
    assert codes == [202, 202, 429]
    r = post(api, "start", ident(uuid.uuid4(), host="wn1"))
    assert r.status_code == 429
    assert int(r["Retry-After"]) >= 1
    assert r.json()["error"] == "throttled"
    assert IngestEvent.objects.count() == 2


def test_starts_drained_together_keep_the_single_path_rules(api, stage, experiment):
    """New attempts of new jobs are inserted together; a retry, a second new
    attempt of a job in the same batch and an unknown stage take the single
    path's way; nodes are created once and updated when their site changes."""
    from prodmon.models import Node

    first = uuid.uuid4()
    post(api, "start", ident(first, "retry.root", host="wn-old", site="OLD"))
    queue.queue_drain()
    retry, a, b, same_job_1, same_job_2, lost = (uuid.uuid4() for _ in range(6))
    post(api, "start", ident(retry, "retry.root", host="wn-old", site="NEW", cores=4))
    post(api, "start", ident(a, "a.root", host="wn-new", site="X", node={"os": "el9"}))
    post(api, "start", ident(b, "b.root", host="wn-new", site="X", node={"gpu": True}))
    post(api, "start", ident(same_job_1, "twice.root", host="wn-old", site="NEW"))
    post(api, "start", ident(same_job_2, "twice.root", host="wn-old", site="NEW"))
    post(api, "start", ident(lost, "x.root", host="wn-old", stage="nostage"))

    with CaptureQueriesContext(connection) as queries:
        result = queue.queue_drain()

    assert (result.applied, result.rejected) == (5, 1)
    attempt_inserts = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith('INSERT INTO "prodmon_attempt"') and q["sql"].count("), (") >= 2
    ]
    assert len(attempt_inserts) == 1  # a, b and the first of twice.root together
    assert Attempt.objects.get(uid=retry).number == 2
    assert Attempt.objects.get(uid=retry).cores == 4
    assert Job.objects.get(key="retry.root").attempt_count == 2
    twice = Job.objects.get(key="twice.root")
    assert twice.attempt_count == 2
    assert sorted(twice.attempts.values_list("number", flat=True)) == [1, 2]
    assert twice.state == Job.State.RUNNING
    new = Node.objects.get(hostname="wn-new")
    assert new.site == "X"
    assert new.properties == {"os": "el9", "gpu": True}
    assert Attempt.objects.get(uid=a).node == new
    assert Node.objects.get(hostname="wn-old").site == "NEW"
    assert Job.objects.get(key="a.root").state == Job.State.RUNNING
    note = IngestEvent.objects.get(state="rejected").note
    assert note.startswith("stage")
    assert "nostage" in note


def test_ends_drained_together_keep_the_single_path_rules(api, stage):
    """Ends of open attempts of jobs without a good attempt are applied
    together; the job states are those of the single path, and a second
    success, two ends of one job and an unseen attempt take the single path."""
    u = {name: uuid.uuid4() for name in ("a", "b1", "b2", "c", "d1", "d2", "e1", "e2", "new")}
    jobs = {"a": "a", "b1": "b", "b2": "b", "c": "c", "d1": "d", "d2": "d", "e1": "e", "e2": "e"}
    for name, job in jobs.items():
        post(api, "start", ident(u[name], f"{job}.root", host="wn1"))
    post(api, "end", ident(u["d1"], "d.root", exit_code=0))
    queue.queue_drain()

    post(
        api,
        "end",
        ident(
            u["a"],
            "a.root",
            exit_code=0,
            outputs=[{"name": "a.out", "size": 7, "parents": ["in.root"]}],
            log={"offset": 0, "data": "bye\n"},
        ),
    )
    post(api, "end", ident(u["b1"], "b.root", exit_code=1))
    post(api, "end", ident(u["c"], "c.root", signal=9))
    post(api, "end", ident(u["d2"], "d.root", exit_code=0))
    post(api, "end", ident(u["e1"], "e.root", exit_code=0))
    post(api, "end", ident(u["e2"], "e.root", exit_code=0))
    post(api, "end", ident(u["new"], "new.root", exit_code=3))

    with CaptureQueriesContext(connection) as queries:
        assert queue.queue_drain().applied == 7

    job_updates = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith("WITH v(") and "prodmon_job" in q["sql"]
    ]
    assert len(job_updates) == 1
    a = Attempt.objects.get(uid=u["a"])
    assert a.job.state == Job.State.SUCCEEDED
    assert a.job.good_attempt_id == a.pk
    assert a.outputs.get().parents == ["in.root"]
    assert a.output_bytes == 7
    assert a.log_bytes == 4
    assert Job.objects.get(key="b.root").state == Job.State.RUNNING  # b2 still runs
    assert Job.objects.get(key="c.root").state == Job.State.FAILED
    assert Attempt.objects.get(uid=u["c"]).signal == 9
    d2 = Attempt.objects.get(uid=u["d2"])
    assert d2.is_duplicate_completion
    assert d2.job.duplicate_completions == 1
    e = Job.objects.get(key="e.root")
    assert e.state == Job.State.SUCCEEDED
    assert e.duplicate_completions == 1
    assert Attempt.objects.get(uid=u["new"]).job.state == Job.State.FAILED
