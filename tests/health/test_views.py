"""The node-health pages and the shifter's flag/clear form."""

import pytest
from django.urls import reverse

from prodmon.models import AuditEntry
from tests.factories import NodeFactory
from tests.health.conftest import client_for
from triage.models import NodeHealth

pytestmark = pytest.mark.django_db


@pytest.fixture
def health(ended, experiment):
    bad = NodeFactory(hostname="wn666.fnal.gov", site="FNAL")
    good = NodeFactory(hostname="wn001.fnal.gov", site="FNAL")
    for i in range(6):
        ended(bad, failed=True, minutes_ago=30 - i, wall_s=20)
        ended(good, failed=False, minutes_ago=30 - i)
    NodeHealth.objects.create(experiment=experiment, node=good, state="healthy")
    return NodeHealth.objects.create(
        experiment=experiment,
        node=bad,
        state="black_hole",
        evidence={"reason": "6 of the last 6 attempts failed", "window_failures": 6},
    )


def test_it_requires_a_login(health, client):
    assert client.get(reverse("health-nodes")).status_code == 302


def test_it_shows_sites_and_nodes_to_members(health, people):
    page = client_for(people["viewer"]).get(reverse("health-nodes"))
    assert page.status_code == 200
    html = page.content.decode()
    assert "FNAL" in html
    assert "wn666.fnal.gov" in html
    assert "wn001.fnal.gov" in html
    assert "6 of the last 6 attempts failed" in html
    assert "black hole" in html


def test_it_hides_other_experiments_nodes(health, people):
    page = client_for(people["outsider"]).get(reverse("health-nodes"))
    assert "wn666.fnal.gov" not in page.content.decode()
    detail = reverse("health-node-detail", args=[health.pk])
    assert client_for(people["outsider"]).get(detail).status_code == 404


def test_it_shows_a_node_with_evidence_and_timeline(health, people):
    page = client_for(people["viewer"]).get(reverse("health-node-detail", args=[health.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert "6 of the last 6 attempts failed" in html
    assert 'class="timeline"' in html
    assert "Flag as black hole" not in html  # a viewer gets no form


def test_it_lets_a_shifter_clear_with_a_note(health, people):
    client = client_for(people["shifter"])
    url = reverse("health-node-set", args=[health.pk])
    response = client.post(url, {"action": "clear", "note": "node drained and fixed"})
    assert response.status_code == 302
    health.refresh_from_db()
    assert health.state == "healthy"
    assert AuditEntry.objects.get(action="node_health.clear").params["note"] == (
        "node drained and fixed"
    )


def test_it_refuses_a_viewer_and_an_empty_note(health, people):
    url = reverse("health-node-set", args=[health.pk])
    assert (
        client_for(people["viewer"]).post(url, {"action": "clear", "note": "x"}).status_code == 403
    )
    client_for(people["shifter"]).post(url, {"action": "clear", "note": ""})
    health.refresh_from_db()
    assert health.state == "black_hole"
    assert not AuditEntry.objects.exists()
