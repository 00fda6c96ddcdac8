"""factory_boy factories for the production model."""

import uuid

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from logserver import services as log_services
from prodmon.models import (
    Attempt,
    Campaign,
    Experiment,
    Job,
    Membership,
    Node,
    Role,
    Stage,
)


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw-for-tests")


class ExperimentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Experiment
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"exp{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    experiment = factory.SubFactory(ExperimentFactory)
    role = Role.VIEWER


class CampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Campaign

    experiment = factory.SubFactory(ExperimentFactory)
    name = factory.Sequence(lambda n: f"campaign{n}")


class StageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Stage

    campaign = factory.SubFactory(CampaignFactory)
    name = factory.Sequence(lambda n: f"stage{n}")
    expected_jobs = 10


class NodeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Node
        django_get_or_create = ("hostname",)

    hostname = factory.Sequence(lambda n: f"wn{n:03d}.example.org")
    site = "FNAL"


class JobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Job

    stage = factory.SubFactory(StageFactory)
    key = factory.Sequence(lambda n: f"input_{n:05d}.root")


class AttemptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Attempt

    job = factory.SubFactory(JobFactory)
    uid = factory.LazyFunction(uuid.uuid4)
    number = factory.Sequence(lambda n: n + 1)
    node = factory.SubFactory(NodeFactory)
    status = Attempt.Status.RUNNING
    started_at = factory.LazyFunction(timezone.now)


def make_token(experiment, scopes=("ingest",), name="wn"):
    """A real token through the real service. Returns (token, raw)."""
    return log_services.token_create(experiment=experiment, name=name, scopes=list(scopes))
