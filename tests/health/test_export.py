"""The exclusion list: exact formats, and who may read it."""

import json

import pytest
from django.test import Client
from django.urls import reverse

from tests.factories import NodeFactory, make_token
from tests.health.conftest import client_for
from triage.models import NodeHealth
from triage.nodehealth.export import htcondor_requirements, slurm_exclude


def test_it_writes_an_htcondor_requirements_expression():
    assert htcondor_requirements(["b.example.org", "a.example.org", "a.example.org", ""]) == (
        '(Machine =!= "a.example.org") && (Machine =!= "b.example.org")'
    )
    assert htcondor_requirements([]) == "True"


def test_it_writes_a_slurm_exclude_list():
    assert slurm_exclude(["wn2", "wn10", "wn2"]) == "wn10,wn2"
    assert slurm_exclude([]) == ""


@pytest.fixture
def flagged(experiment, other_experiment):
    bad = NodeFactory(hostname="wn666.fnal.gov", site="FNAL")
    bad2 = NodeFactory(hostname="wn013.fnal.gov", site="FNAL")
    theirs = NodeFactory(hostname="wn999.cern.ch", site="CERN")
    ok = NodeFactory(hostname="wn001.fnal.gov", site="FNAL")
    NodeHealth.objects.create(
        experiment=experiment,
        node=bad,
        state="black_hole",
        evidence={"reason": "6 of the last 8 attempts failed"},
    )
    NodeHealth.objects.create(
        experiment=experiment, node=bad2, state="black_hole", manual=True, note="GGUS 1"
    )
    NodeHealth.objects.create(experiment=experiment, node=ok, state="suspect")
    NodeHealth.objects.create(experiment=other_experiment, node=theirs, state="black_hole")


@pytest.mark.django_db
def test_it_serves_the_formats_to_an_ingest_token_of_the_experiment(flagged, experiment):
    _, raw = make_token(experiment, scopes=("read",))
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    condor = client.get(reverse("health-exclusions-htcondor"))
    assert condor.status_code == 200
    assert condor["Content-Type"].startswith("text/plain")
    assert condor.content.decode() == (
        '(Machine =!= "wn013.fnal.gov") && (Machine =!= "wn666.fnal.gov")\n'
    )
    slurm = client.get(reverse("health-exclusions-slurm"))
    assert slurm.content.decode() == "wn013.fnal.gov,wn666.fnal.gov\n"
    data = json.loads(client.get(reverse("health-exclusions-json")).content)
    assert data["hostnames"] == ["wn013.fnal.gov", "wn666.fnal.gov"]
    assert data["slurm_exclude"] == "wn013.fnal.gov,wn666.fnal.gov"
    assert data["htcondor_requirements"] == condor.content.decode().strip()
    assert data["nodes"][0]["flags"][0] == {
        "experiment": "dune",
        "since": data["nodes"][0]["flags"][0]["since"],
        "manual": True,
        "reason": "GGUS 1",
    }
    assert data["nodes"][1]["flags"][0]["reason"] == "6 of the last 8 attempts failed"
    api = json.loads(client.get(reverse("api-node-exclusions")).content)
    assert api["hostnames"] == data["hostnames"]


@pytest.mark.django_db
def test_it_refuses_a_token_without_read_scope(flagged, experiment):
    _, raw = make_token(experiment, scopes=("ingest",))
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get(reverse("health-exclusions-slurm")).status_code == 403


@pytest.mark.django_db
def test_it_refuses_anonymous_callers(flagged):
    assert Client().get(reverse("health-exclusions-htcondor")).status_code in (401, 403)


@pytest.mark.django_db
def test_it_scopes_a_member_to_their_experiments(flagged, people):
    outsider = client_for(people["outsider"])
    assert outsider.get(reverse("health-exclusions-slurm")).content.decode() == "wn999.cern.ch\n"
    viewer = client_for(people["viewer"])
    body = viewer.get(reverse("health-exclusions-slurm") + "?experiment=dune").content.decode()
    assert body == "wn013.fnal.gov,wn666.fnal.gov\n"
    assert viewer.get(reverse("health-exclusions-slurm") + "?experiment=mu2e").status_code == 404


@pytest.mark.django_db
def test_it_gives_the_submission_layer_the_hostnames(flagged, experiment):
    from prodmon.submission import node_exclusion_list

    assert node_exclusion_list() == ["wn013.fnal.gov", "wn666.fnal.gov", "wn999.cern.ch"]
    from triage.selectors import node_exclusion_list as for_experiment

    assert for_experiment(experiment.pk) == ["wn013.fnal.gov", "wn666.fnal.gov"]
