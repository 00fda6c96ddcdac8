"""The site baseline behind black-hole judgements: one aggregate per site,
cached, from which the judged node and flagged nodes are left out."""

import pytest
from django.core.cache import cache
from django.utils import timezone

from triage import services
from triage.models import NodeHealth
from triage.nodehealth.detector import shrunk_rate

pytestmark = pytest.mark.django_db


@pytest.fixture
def config():
    return services.node_health_config()


def test_the_baseline_leaves_out_the_judged_node_and_flagged_nodes(
    site_nodes, ended, stage, experiment, config
):
    judged, flagged, *others = site_nodes
    for _ in range(6):
        ended(judged, failed=True)
        ended(flagged, failed=True)
    for node in others[:4]:
        ended(node, failed=False)
        ended(node, failed=True)
    NodeHealth.objects.create(
        experiment=experiment, node=flagged, state=NodeHealth.State.BLACK_HOLE
    )
    cid = stage.campaign_id
    rates, _ = services._site_baselines(
        experiment_id=experiment.pk,
        site="FNAL",
        campaign_ids={cid},
        node_id=judged.pk,
        now=timezone.now(),
        config=config,
    )
    assert rates[("FNAL", cid)] == pytest.approx(shrunk_rate(4, 8, config=config))


def test_a_sites_counts_are_computed_once_per_interval(settings, site_nodes, ended, config):
    settings.TRIAGE_BASELINE_CACHE_SECONDS = 60
    cache.clear()
    node = site_nodes[0]
    ended(node, failed=True)
    first, _ = services._site_counts(site="FNAL", now=timezone.now(), config=config)
    ended(node, failed=True)
    cached, _ = services._site_counts(site="FNAL", now=timezone.now(), config=config)
    assert cached == first  # the new failure is not counted until the entry expires
    settings.TRIAGE_BASELINE_CACHE_SECONDS = 0
    fresh, _ = services._site_counts(site="FNAL", now=timezone.now(), config=config)
    assert sum(f for f, _ in fresh.values()) == sum(f for f, _ in first.values()) + 1
