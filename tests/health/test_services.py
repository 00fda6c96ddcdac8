"""Node health through the database: the update after an attempt end, the
sweep, and a shifter's manual flag and clear."""

import pytest
from django.core.exceptions import PermissionDenied

from prodmon.models import AuditEntry
from tests.factories import NodeFactory
from triage import selectors, services, tasks
from triage.models import NodeHealth, NodeHealthEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def busy_site(ended, site_nodes):
    """A site where ten nodes each ran 20 attempts with one slow failure."""
    for node in site_nodes:
        for i in range(20):
            ended(node, failed=i == 7, minutes_ago=300 - i * 10)
    return site_nodes


def run_on(ended, node, pattern: str, *, start_ago: float = 120, **kw):
    """End attempts on `node` as the pattern says ('.' ok, 'x' slow fail, 'f' fast
    fail), running the task after each as the ingest hook does."""
    last = None
    for i, ch in enumerate(pattern):
        wall = 30.0 if ch == "f" else 3000.0
        last = ended(node, failed=ch != ".", minutes_ago=start_ago - i, wall_s=wall, **kw)
        tasks.node_health_update_task(last.pk)
    return last


def test_it_flags_a_black_hole_with_its_evidence(ended, busy_site, experiment):
    bad = NodeFactory(hostname="wn666.fnal.gov", site="FNAL")
    run_on(ended, bad, "." * 10 + "f" * 6)
    health = NodeHealth.objects.get(node=bad, experiment=experiment)
    assert health.state == NodeHealth.State.BLACK_HOLE
    ev = health.evidence
    assert ev["window_failures"] >= 5
    assert "fast-failure" in ev["signatures"]
    assert ev["baseline_rate"] == pytest.approx((10 + 0.05 * 20) / (200 + 20))
    assert ev["classes"] == {"exit:1": ev["window_failures"]}
    assert ev["first_bad_attempt_uid"]
    assert selectors.node_exclusion_list() == ["wn666.fnal.gov"]
    assert selectors.node_exclusion_list(experiment.pk) == ["wn666.fnal.gov"]
    event = NodeHealthEvent.objects.get(health=health, after=NodeHealth.State.BLACK_HOLE)
    assert not event.manual
    assert "failed" in event.note


def test_it_leaves_healthy_nodes_of_the_site_alone(ended, busy_site, experiment):
    for node in busy_site:
        tasks.node_health_update_task(node.attempts.latest("ended_at").pk)
    assert set(NodeHealth.objects.values_list("state", flat=True)) == {"healthy"}
    assert selectors.node_exclusion_list() == []


def test_it_needs_enough_failures(ended, busy_site, experiment):
    bad = NodeFactory(hostname="wn666.fnal.gov", site="FNAL")
    run_on(ended, bad, "." * 10 + "ffff")
    assert NodeHealth.objects.get(node=bad).state != NodeHealth.State.BLACK_HOLE


def test_it_clears_a_node_that_recovers(ended, busy_site, experiment):
    bad = NodeFactory(hostname="wn666.fnal.gov", site="FNAL")
    run_on(ended, bad, "." * 5 + "f" * 6, start_ago=60)
    assert NodeHealth.objects.get(node=bad).state == NodeHealth.State.BLACK_HOLE
    run_on(ended, bad, ".....", start_ago=30)
    health = NodeHealth.objects.get(node=bad)
    assert health.state != NodeHealth.State.BLACK_HOLE
    assert health.evidence_since is not None
    assert selectors.node_exclusion_list() == []
    assert list(health.events.values_list("before", "after"))[0][0] == "black_hole"


def test_it_clears_an_idle_flagged_node_in_the_sweep(ended, busy_site, experiment):
    bad = NodeFactory(hostname="wn666.fnal.gov", site="FNAL")
    run_on(ended, bad, "." * 5 + "f" * 6, start_ago=7 * 60)  # all older than the window
    NodeHealth.objects.filter(node=bad).update(state=NodeHealth.State.BLACK_HOLE)
    assert tasks.node_health_sweep_task() is None
    assert NodeHealth.objects.get(node=bad).state == NodeHealth.State.HEALTHY


def test_it_lets_a_shifter_flag_and_clear_by_hand_audited(ended, busy_site, experiment, people):
    node = busy_site[0]
    run_on(ended, node, "...")
    health = NodeHealth.objects.get(node=node)
    services.node_health_set(
        health_id=health.pk, flag=True, actor=people["shifter"], note="cvmfs stale, GGUS 123"
    )
    health.refresh_from_db()
    assert (health.state, health.manual) == (NodeHealth.State.BLACK_HOLE, True)
    # The detector does not undo a manual flag.
    run_on(ended, node, ".....", start_ago=30)
    health.refresh_from_db()
    assert health.state == NodeHealth.State.BLACK_HOLE
    services.node_health_set(health_id=health.pk, flag=False, actor=people["shifter"], note="fixed")
    health.refresh_from_db()
    assert (health.state, health.manual) == (NodeHealth.State.HEALTHY, False)
    audit = list(AuditEntry.objects.order_by("created_at").values_list("action", "params"))
    assert [a for a, _ in audit] == ["node_health.flag", "node_health.clear"]
    assert audit[0][1]["note"] == "cvmfs stale, GGUS 123"
    assert audit[0][1]["hostname"] == node.hostname
    assert health.events.filter(manual=True, actor=people["shifter"]).count() == 2


@pytest.mark.parametrize("who", ["viewer", "outsider"])
def test_it_refuses_manual_changes_below_shifter(ended, busy_site, people, who):
    run_on(ended, busy_site[0], "...")
    health = NodeHealth.objects.get(node=busy_site[0])
    with pytest.raises(PermissionDenied):
        services.node_health_set(health_id=health.pk, flag=True, actor=people[who], note="x")
    assert not AuditEntry.objects.exists()
    health.refresh_from_db()
    assert health.state == NodeHealth.State.HEALTHY


def test_it_requires_a_note(ended, busy_site, people):
    run_on(ended, busy_site[0], "...")
    health = NodeHealth.objects.get(node=busy_site[0])
    with pytest.raises(services.NodeHealthNoteRequired):
        services.node_health_set(health_id=health.pk, flag=True, actor=people["shifter"], note=" ")


@pytest.fixture
def noisy_site(ended, site_nodes):
    """A site failing 10 % (two slow exit-1 failures in 20 per node)."""
    for node in site_nodes:
        for i in range(20):
            ended(node, failed=i in (7, 13), minutes_ago=300 - i * 10)
    return site_nodes


def half_failing(ended, node, *, exit_code: int):
    last = None
    for i, ch in enumerate("." * 10 + ".x" * 7):
        failed = ch == "x"
        last = ended(node, failed=failed, minutes_ago=100 - i, exit_code=exit_code if failed else 0)
        tasks.node_health_update_task(last.pk)
    return NodeHealth.objects.get(node=node)


def test_it_proves_a_half_failing_node_by_a_class_the_site_never_shows(
    ended, noisy_site, experiment, people
):
    from tests.health.conftest import client_for

    health = half_failing(ended, NodeFactory(hostname="wn777.fnal.gov", site="FNAL"), exit_code=137)
    assert health.state == NodeHealth.State.BLACK_HOLE
    ev = health.evidence
    assert ev["probability"] < 0.99  # the overall rate alone proves nothing
    assert ev["class_probability"] >= 0.99
    assert ev["top_class"] == "exit:137"
    assert ev["class_threshold_rate"] == pytest.approx(0.15)
    page = client_for(people["viewer"]).get(f"/nodes/{health.pk}/").content.decode()
    assert "One-class test" in page
    assert "7 of exit:137" in page


def test_it_does_not_use_the_class_test_for_the_sites_own_failure(ended, noisy_site, experiment):
    health = half_failing(ended, NodeFactory(hostname="wn778.fnal.gov", site="FNAL"), exit_code=1)
    assert health.state != NodeHealth.State.BLACK_HOLE
    assert health.evidence["class_probability"] is None
