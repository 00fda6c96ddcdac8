"""Concurrent ingest on real PostgreSQL: row locks and unique constraints, not luck."""

import json
import threading
import uuid

import pytest
from django.db import connection
from django.test import Client

from logserver.models import IngestEvent
from prodmon.models import Attempt, Job
from tests.factories import CampaignFactory, StageFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("require_postgres")]


def _fire(raw_token: str, bodies: list[tuple[str, dict]]) -> list[int]:
    codes: list[int] = [0] * len(bodies)
    barrier = threading.Barrier(len(bodies))

    def worker(i: int, kind: str, body: dict) -> None:
        client = Client(HTTP_AUTHORIZATION=f"Bearer {raw_token}")
        barrier.wait()
        try:
            r = client.post(
                f"/api/v1/ingest/{kind}/", data=json.dumps(body), content_type="application/json"
            )
            codes[i] = r.status_code
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i, k, b)) for i, (k, b) in enumerate(bodies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return codes


@pytest.fixture
def stage(experiment):
    return StageFactory(campaign=CampaignFactory(experiment=experiment, name="mc"), name="gen")


def _body(uid, job="in.root", **extra):
    return {
        "event_id": uuid.uuid4().hex,
        "campaign": "mc",
        "stage": "gen",
        "job": job,
        "attempt": str(uid),
        **extra,
    }


def test_it_applies_one_event_sent_eight_times_at_once_exactly_once(stage, ingest_token):
    body = _body(uuid.uuid4(), host="wn01")
    codes = _fire(ingest_token[1], [("start", body)] * 8)
    assert sorted(codes) == [200] * 7 + [201]
    assert IngestEvent.objects.filter(event_id=body["event_id"]).count() == 1
    assert Attempt.objects.count() == 1


def test_it_numbers_concurrent_new_attempts_of_one_job_without_gaps(stage, ingest_token):
    bodies = [("start", _body(uuid.uuid4(), host=f"wn{i}")) for i in range(6)]
    codes = _fire(ingest_token[1], bodies)
    assert codes == [201] * 6
    job = Job.objects.get()
    assert job.attempt_count == 6
    assert sorted(job.attempts.values_list("number", flat=True)) == [1, 2, 3, 4, 5, 6]


def test_it_counts_one_completion_when_attempts_of_a_job_end_together(stage, ingest_token):
    uids = [uuid.uuid4() for _ in range(5)]
    _fire(ingest_token[1], [("start", _body(u, host="wn")) for u in uids])
    codes = _fire(ingest_token[1], [("end", _body(u, exit_code=0)) for u in uids])
    assert codes == [201] * 5
    job = Job.objects.get()
    assert job.state == "succeeded"
    assert job.duplicate_completions == 4
    assert Attempt.objects.filter(is_duplicate_completion=False, status="succeeded").count() == 1


def test_it_handles_start_heartbeat_and_end_of_one_attempt_racing(stage, ingest_token):
    uid = uuid.uuid4()
    bodies = [
        ("start", _body(uid, host="wn")),
        ("heartbeat", _body(uid, metrics={"cpu_s": 1})),
        ("end", _body(uid, exit_code=2)),
        ("heartbeat", _body(uid, log={"offset": 0, "data": "x"})),
    ]
    assert _fire(ingest_token[1], bodies) == [201] * 4
    attempt = Attempt.objects.get()
    assert (attempt.status, attempt.exit_code) == ("failed", 2)
    assert IngestEvent.objects.count() == 4
