"""No double submission, on real PostgreSQL: many operators (or one double
click) hitting the real retry view at once, each thread with its own
connection, give exactly one new attempt."""

import re
import threading
import uuid

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from prodmon.models import Attempt, BulkAction, Job
from prodmon.submission.config import submission_dir
from tests.actions.conftest import failed_job, payload_output, runs_started

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("require_postgres")]

N = 12


def fire(user, posts: list[tuple[str, dict]]) -> list[int]:
    """POST each (url, data) from its own thread and connection, all released at once."""
    seed = Client()
    seed.force_login(user)
    cookies = seed.cookies
    codes = [0] * len(posts)
    barrier = threading.Barrier(len(posts))

    def worker(i: int, url: str, data: dict) -> None:
        client = Client()
        client.cookies = cookies
        try:
            barrier.wait()
            codes[i] = client.post(url, data).status_code
        finally:
            connection.close()

    threads = [
        threading.Thread(target=worker, args=(i, url, data)) for i, (url, data) in enumerate(posts)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return codes


def test_it_gives_one_attempt_when_many_operators_retry_at_once(stage, shifter):
    job = failed_job(stage)
    url = reverse("job-retry", args=[job.pk])
    codes = fire(shifter, [(url, {"idempotency_key": uuid.uuid4().hex}) for _ in range(N)])
    assert codes == [302] * N
    assert job.attempts.count() == 2
    assert Attempt.objects.filter(job=job, status="queued").count() == 1
    # One process really started on this machine, for the one new attempt.
    assert len(runs_started(submission_dir())) == 1
    assert payload_output(job.attempts.get(number=2)) == f"generating {job.key} seed=42"
    actions = BulkAction.objects.all()
    assert actions.count() == N
    assert sum(a.done for a in actions) == 1
    assert sum(a.skipped for a in actions) == N - 1
    assert Job.objects.get(pk=job.pk).attempt_count == 2


def test_it_gives_one_request_for_a_form_sent_many_times_at_once(stage, shifter):
    job = failed_job(stage)
    url = reverse("job-retry", args=[job.pk])
    form = {"idempotency_key": uuid.uuid4().hex}
    codes = fire(shifter, [(url, form)] * N)
    assert codes == [302] * N
    assert BulkAction.objects.count() == 1
    assert job.attempts.count() == 2
    assert len(runs_started(submission_dir())) == 1


def test_it_submits_each_job_once_when_bulk_retries_overlap(stage, shifter):
    jobs = [failed_job(stage, f"gen_{i:05d}.root") for i in range(5)]
    url = reverse("bulk-retry") + f"?stage={stage.pk}"
    client = Client()
    client.force_login(shifter)
    page = client.get(url).content.decode()

    selection = re.search(r'name="selection" value="([^"]*)"', page).group(1)
    posts = [(url, {"idempotency_key": uuid.uuid4().hex, "selection": selection}) for _ in range(6)]
    codes = fire(shifter, posts)
    assert codes == [302] * 6
    for job in jobs:
        assert job.attempts.count() == 2, job.key
    assert len(runs_started(submission_dir())) == 5
    ran = {payload_output(a) for a in Attempt.objects.filter(number=2)}
    assert ran == {f"generating {j.key} seed=42" for j in jobs}
    assert sum(a.done for a in BulkAction.objects.all()) == 5
