"""From the ingest API to an error class: an end event with a bad_alloc log."""

import json
import uuid

import pytest
from django.test import Client

from prodmon.models import Attempt
from tests.factories import CampaignFactory, StageFactory
from triage.models import AttemptClassification

pytestmark = pytest.mark.django_db


def post(client, kind, body):
    return client.post(
        f"/api/v1/ingest/{kind}/", data=json.dumps(body), content_type="application/json"
    )


def test_it_classifies_an_attempt_as_its_end_event_arrives(
    experiment, ingest_token, django_capture_on_commit_callbacks
):
    StageFactory(
        campaign=CampaignFactory(experiment=experiment, name="mc"), name="gen", job_type="art"
    )
    api = Client(HTTP_AUTHORIZATION=f"Bearer {ingest_token[1]}")
    uid = uuid.uuid4()
    ident = {"campaign": "mc", "stage": "gen", "job": "gen_0001", "attempt": str(uid)}
    start = post(
        api,
        "start",
        {**ident, "event_id": uuid.uuid4().hex, "host": "wn17.fnal.gov", "site": "FNAL"},
    )
    assert start.status_code == 201, start.content
    log = (
        "Begin processing the 1st record. run: 1 subRun: 0 event: 1\n"
        "terminate called after throwing an instance of 'std::bad_alloc'\n"
        "  what():  std::bad_alloc\n"
    )
    with django_capture_on_commit_callbacks(execute=True):
        end = post(
            api,
            "end",
            {**ident, "event_id": uuid.uuid4().hex, "exit_code": 134,
             "metrics": {"wall_s": 3600}, "log": {"offset": 0, "data": log}},
        )  # fmt: skip
    assert end.status_code == 201, end.content
    attempt = Attempt.objects.get(uid=uid)
    assert attempt.status == "failed"
    row = AttemptClassification.objects.select_related("error_class").get(attempt=attempt)
    assert row.error_class.key == "rule:builtin:bad-alloc"
    assert row.error_class.category == "resource-limit"
    assert row.line == "  what():  std::bad_alloc"
    assert row.line_number == 3
    assert (row.site, row.wall_s) == ("FNAL", 3600)
