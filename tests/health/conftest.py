"""Fixtures for node health and liveness: a campaign, people, and attempts
ended on chosen nodes at chosen times."""

import datetime as dt
import uuid

import pytest
from django.test import Client
from django.utils import timezone

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
