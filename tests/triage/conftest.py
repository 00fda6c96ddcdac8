"""Fixtures for the triage tests: attempts that end with a log, the triage way."""

import uuid

import pytest
from django.utils import timezone

from logserver.models import LogChunk
from prodmon.models import Attempt, Role
from tests.factories import (
    AttemptFactory,
    CampaignFactory,
    JobFactory,
    MembershipFactory,
    NodeFactory,
    StageFactory,
    UserFactory,
)
from triage import persistence


@pytest.fixture(autouse=True)
def _fresh_miners():
    # Each test starts like a freshly started process.
    persistence.forget_cached_miners()
    yield
    persistence.forget_cached_miners()


@pytest.fixture
def campaign(experiment):
    return CampaignFactory(experiment=experiment, name="mc2025")


@pytest.fixture
def stage(campaign):
    return StageFactory(campaign=campaign, name="reco", job_type="art")


@pytest.fixture
def ended_attempt(stage):
    """Build an ended attempt with a log, without going through ingest."""

    def build(
        *,
        log: str = "",
        exit_code: int | None = 1,
        signal: int | None = None,
        status: str = Attempt.Status.FAILED,
        reported_success: bool | None = None,
        on_stage=None,
        node=None,
        ended_at=None,
        wall_s: float | None = 600.0,
        job=None,
    ) -> Attempt:
        job = job or JobFactory(stage=on_stage or stage)
        data = log.encode()
        attempt = AttemptFactory(
            job=job,
            uid=uuid.uuid4(),
            node=node or NodeFactory(hostname="wn042.fnal.gov", site="FNAL"),
            status=status,
            exit_code=exit_code,
            signal=signal,
            reported_success=reported_success,
            ended_at=ended_at or timezone.now(),
            wall_s=wall_s,
            log_bytes=len(data),
        )
        if data:
            LogChunk.objects.create(attempt=attempt, offset=0, length=len(data), data=data)
        return attempt

    return build


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
