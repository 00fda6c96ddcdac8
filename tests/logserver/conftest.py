"""Fixtures for the log server tests: an attempt with a log, written through
the real services."""

import uuid

import pytest

from logserver import services
from tests.factories import AttemptFactory, CampaignFactory, JobFactory, NodeFactory, StageFactory


@pytest.fixture
def stage(experiment):
    return StageFactory(campaign=CampaignFactory(experiment=experiment, name="mc"), name="gen")


@pytest.fixture
def make_attempt(stage):
    def build(stage_=None, **kwargs):
        kwargs.setdefault("node", NodeFactory(hostname="wn01.fnal.gov", site="FNAL"))
        job = kwargs.pop("job", None) or JobFactory(stage=stage_ or stage)
        return AttemptFactory(job=job, **kwargs)

    return build


def ingest_log(token, attempt, offset: int, data: bytes, kind: str = "heartbeat", **extra):
    """Post one event carrying a log chunk through the ingest service."""
    job = attempt.job
    body = {
        "event_id": uuid.uuid4().hex,
        "campaign": job.stage.campaign.name,
        "stage": job.stage.name,
        "job": job.key,
        "attempt": attempt.uid,
        "log": {"offset": offset, "bytes": data},
        **extra,
    }
    return services.event_ingest(token=token, kind=kind, data=body)
