"""Fixtures for node health and liveness: a campaign, people, attempts ended
on chosen nodes at chosen times, and event streams sent through the ingest API."""

import datetime as dt
import json
import uuid

import pytest
from django.test import Client
from django.utils import timezone

from prodmon.models import Attempt, Job, Role
from tests.factories import (
    AttemptFactory,
    CampaignFactory,
    JobFactory,
    MembershipFactory,
    NodeFactory,
    StageFactory,
    UserFactory,
)
from triage import services


@pytest.fixture
def campaign(experiment):
    return CampaignFactory(experiment=experiment, name="mc2025")


@pytest.fixture
def stage(campaign):
    return StageFactory(campaign=campaign, name="reco", job_type="art")


@pytest.fixture
def people(experiment, other_experiment):
    """shifter and viewer of `experiment`, and an outsider (member elsewhere only)."""
    shifter = UserFactory(username="shifter")
    viewer = UserFactory(username="viewer")
    outsider = UserFactory(username="outsider")
    MembershipFactory(user=shifter, experiment=experiment, role=Role.SHIFTER)
    MembershipFactory(user=viewer, experiment=experiment, role=Role.VIEWER)
    MembershipFactory(user=outsider, experiment=other_experiment, role=Role.SHIFTER)
    return {"shifter": shifter, "viewer": viewer, "outsider": outsider}


def client_for(user, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


@pytest.fixture
def ended(stage):
    """ended(node, failed=..., minutes_ago=..., wall_s=...) -> an ended attempt."""

    def build(node, *, failed: bool, minutes_ago: float = 5, wall_s: float = 3000.0, **kw):
        end = timezone.now() - dt.timedelta(minutes=minutes_ago)
        return AttemptFactory(
            job=JobFactory(stage=kw.pop("on_stage", stage)),
            uid=uuid.uuid4(),
            node=node,
            status=Attempt.Status.FAILED if failed else Attempt.Status.SUCCEEDED,
            exit_code=kw.pop("exit_code", 1 if failed else 0),
            started_at=end - dt.timedelta(seconds=wall_s),
            ended_at=end,
            wall_s=wall_s,
            **kw,
        )

    return build


@pytest.fixture
def site_nodes(db):
    """Ten healthy-looking nodes at FNAL plus the one under test."""
    return [NodeFactory(hostname=f"wn{i:03d}.fnal.gov", site="FNAL") for i in range(10)]


# --- event streams through the ingest API (tests of liveness and attention) -----


@pytest.fixture
def reco(experiment):
    campaign = CampaignFactory(experiment=experiment, name="mc2026")
    return StageFactory(campaign=campaign, name="reco", job_type="art")


@pytest.fixture
def send(ingest_token, django_capture_on_commit_callbacks):
    api = Client(HTTP_AUTHORIZATION=f"Bearer {ingest_token[1]}")

    def post(kind, key, uid, **body):
        ident = {"campaign": "mc2026", "stage": "reco", "job": key, "attempt": str(uid)}
        with django_capture_on_commit_callbacks(execute=True):
            r = api.post(
                f"/api/v1/ingest/{kind}/",
                json.dumps({**ident, "event_id": uuid.uuid4().hex, **body}),
                content_type="application/json",
            )
        assert r.status_code == 201, r.content
        return Attempt.objects.get(uid=uid)

    return post


def beat(send, key, uid, *, events, at):
    return send("heartbeat", key, uid, time=at.isoformat(), metrics={"events_processed": events})


def complete(send, key, **end):
    uid = uuid.uuid4()
    send("start", key, uid, host=end.pop("host", "wn01.fnal.gov"))
    return send("end", key, uid, exit_code=end.pop("exit_code", 0), **end)


@pytest.fixture
def stream(send, reco, settings):
    """A campaign with one lost attempt, one hung, one duplicate completion and
    one job-failed skim, all from events."""
    settings.TRIAGE_HEARTBEAT_SECONDS = 60
    settings.TRIAGE_HUNG_AFTER_SECONDS = 600
    for key in ("lost.root", "hung.root", "dup.root", "skim.root", "fine.root"):
        JobFactory(stage=reco, key=key, events_expected=100)
    Job.objects.filter(key="skim.root").update(expected_outputs=["a.root", "b.root"])
    long_ago = (timezone.now() - dt.timedelta(hours=1)).isoformat()
    send("start", "lost.root", uuid.uuid4(), host="wn01.fnal.gov", time=long_ago)
    hung = uuid.uuid4()
    send("start", "hung.root", hung, host="wn02.fnal.gov")
    complete(send, "dup.root")
    complete(send, "dup.root")
    complete(send, "skim.root", exit_code=139)
    complete(send, "fine.root")
    start = timezone.now()
    services.liveness_sweep(now=start)
    later = start + dt.timedelta(seconds=700)
    Attempt.objects.filter(uid=hung).update(last_heartbeat_at=later)
    services.liveness_sweep(now=later)
    return reco
