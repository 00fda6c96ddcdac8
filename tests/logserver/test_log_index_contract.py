"""One contract for every log index backend.

- database: runs on SQLite (FTS5) and, with DATABASE_URL=postgres://…, on
  PostgreSQL (GIN tsvector + pg_trgm).
- elasticsearch: runs only when ELASTICSEARCH_URL points at a real server
  (deploy/compose.yaml starts one). No Elasticsearch server can run on the
  machines this was written on, so there it skips and says so;
  test_index_elasticsearch.py checks the requests that backend sends instead.
"""

import datetime as dt
import os
import uuid

import pytest
from django.utils import timezone

from logserver import indexing, retention, selectors, services
from logserver.index import get_log_index
from logserver.models import LogRetentionPolicy
from prodmon.models import Attempt, Campaign, Job, Stage
from tests.factories import (
    AttemptFactory,
    CampaignFactory,
    JobFactory,
    NodeFactory,
    StageFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["database", "elasticsearch"])
def backend(request, settings):
    settings.PRODMON_LOG_INDEX = request.param
    if request.param == "database":
        yield "database"
        return
    url = os.environ.get("ELASTICSEARCH_URL", "")
    if not url:
        pytest.skip(
            "Elasticsearch backend NOT verified live: ELASTICSEARCH_URL is not set and no "
            "Elasticsearch server can be installed on these machines. Its requests are checked "
            "exactly in test_index_elasticsearch.py; to run this contract against a real "
            "cluster: docker compose -f deploy/compose.yaml up elasticsearch, then "
            "ELASTICSEARCH_URL=http://127.0.0.1:9200"
        )
    from logserver.index.elasticsearch import es_client, es_setup

    settings.ELASTICSEARCH_URL = url
    settings.PRODMON_ES_DATA_STREAM_PREFIX = f"logs-prodmontest{uuid.uuid4().hex[:8]}"
    client = es_client()
    es_setup(client, experiments=[])
    yield "elasticsearch"
    prefix = settings.PRODMON_ES_DATA_STREAM_PREFIX
    client.indices.delete_data_stream(name=f"{prefix}-*")
    client.indices.delete_index_template(name=prefix)
    client.ilm.delete_lifecycle(name=prefix)


def _attempt(experiment, campaign="mc", stage="gen", host="wn01.fnal.gov", site="FNAL", **kw):
    camp = Campaign.objects.filter(experiment=experiment, name=campaign).first()
    camp = camp or CampaignFactory(experiment=experiment, name=campaign)
    st = Stage.objects.filter(campaign=camp, name=stage).first()
    st = st or StageFactory(campaign=camp, name=stage)
    job = JobFactory(stage=st)
    return AttemptFactory(job=job, node=NodeFactory(hostname=host, site=site), **kw)


def _write(attempt, text: str, *, ended_with: int | None = None, at=None) -> None:
    data = text.encode()
    services.log_chunk_store(attempt=attempt, offset=0, data=data, logged_at=at)
    fields = {"log_bytes": len(data)}
    if ended_with is not None:
        fields.update(
            status=Attempt.Status.SUCCEEDED if ended_with == 0 else Attempt.Status.FAILED,
            exit_code=ended_with,
            ended_at=timezone.now(),
        )
    Attempt.objects.filter(pk=attempt.pk).update(**fields)
    indexing.log_index_attempt(attempt_id=attempt.pk)
    get_log_index().refresh()


def _search(experiment_ids, text, **filters) -> list[tuple[str, int]]:
    result = selectors.log_search(experiment_ids=set(experiment_ids), text=text, **filters)
    return [(str(h.attempt.uid), h.line_no) for h in result.hits]


LOG = (
    "Begin processing the 1st record. run: 20000001\n"
    "%MSG-s ArtException:  PostEndJob\n"
    "cet::exception caught in art\n"
    "    Fatal Root Error: @SUB=TFile::TFile\n"
    "    file gsimple_DUNE_2025.root does not exist\n"
    "Art has completed and will exit with status 65.\n"
)


def test_it_matches_every_word_in_any_order_and_case(backend, experiment):
    a = _attempt(experiment)
    _write(a, LOG)
    uid = str(a.uid)
    assert _search({experiment.pk}, "fatal error") == [(uid, 4)]
    assert _search({experiment.pk}, "ERROR FATAL") == [(uid, 4)]
    assert _search({experiment.pk}, "fatal nonexistentword") == []


def test_it_matches_a_quoted_phrase_exactly(backend, experiment):
    a = _attempt(experiment)
    _write(a, LOG)
    uid = str(a.uid)
    assert _search({experiment.pk}, '"does not exist"') == [(uid, 5)]
    assert _search({experiment.pk}, '"not does exist"') == []
    assert _search({experiment.pk}, 'status "will exit"') == [(uid, 6)]


def test_a_user_of_one_experiment_never_sees_another_s_lines(backend, experiment, other_experiment):
    mine = _attempt(experiment)
    theirs = _attempt(other_experiment)
    _write(mine, "common secret word\n")
    _write(theirs, "common secret word\n")
    assert _search({experiment.pk}, "secret") == [(str(mine.uid), 1)]
    assert _search({other_experiment.pk}, "secret") == [(str(theirs.uid), 1)]
    assert _search(set(), "secret") == []
    # Naming the other experiment does not widen the scope.
    assert _search({experiment.pk}, "secret", experiment=other_experiment.name) == []


def test_it_filters_by_campaign_stage_site_node_and_exit_code(backend, experiment):
    a = _attempt(experiment, campaign="mc", stage="gen", host="wn1.fnal.gov", site="FNAL")
    b = _attempt(experiment, campaign="data", stage="reco", host="b7.cern.ch", site="CERN")
    _write(a, "needle\n", ended_with=65)
    _write(b, "needle\n", ended_with=0)
    ua, ub = (str(a.uid), 1), (str(b.uid), 1)
    ids = {experiment.pk}
    assert sorted(_search(ids, "needle")) == sorted([ua, ub])
    assert _search(ids, "needle", campaign="mc") == [ua]
    assert _search(ids, "needle", stage="reco") == [ub]
    assert _search(ids, "needle", site="CERN") == [ub]
    assert _search(ids, "needle", node="wn1.fnal.gov") == [ua]
    assert _search(ids, "needle", exit_code=65) == [ua]
    assert _search(ids, "needle", exit_code=0) == [ub]
    assert _search(ids, "needle", attempt_ids=[b.pk]) == [ub]
    assert _search(ids, "needle", attempt_ids=[]) == []


def test_the_exit_code_filter_sees_lines_indexed_while_the_job_ran(backend, experiment):
    a = _attempt(experiment)
    _write(a, "early line\n")
    Attempt.objects.filter(pk=a.pk).update(
        status=Attempt.Status.FAILED, exit_code=3, ended_at=timezone.now()
    )
    indexing.log_index_attempt(attempt_id=a.pk)
    get_log_index().refresh()
    assert _search({experiment.pk}, "early", exit_code=3) == [(str(a.uid), 1)]


def test_it_filters_by_time_and_answers_newest_first(backend, experiment):
    now = timezone.now().replace(microsecond=0)
    old = _attempt(experiment)
    new = _attempt(experiment)
    _write(old, "tick\n", at=now - dt.timedelta(days=3))
    _write(new, "tick\n", at=now - dt.timedelta(hours=1))
    ids = {experiment.pk}
    assert _search(ids, "tick") == [(str(new.uid), 1), (str(old.uid), 1)]
    assert _search(ids, "tick", since=now - dt.timedelta(days=1)) == [(str(new.uid), 1)]
    assert _search(ids, "tick", until=now - dt.timedelta(days=1)) == [(str(old.uid), 1)]


def test_it_pages_with_limit_and_offset(backend, experiment):
    a = _attempt(experiment)
    _write(a, "".join(f"row {i}\n" for i in range(7)))
    first = selectors.log_search(experiment_ids={experiment.pk}, text="row", limit=5)
    rest = selectors.log_search(experiment_ids={experiment.pk}, text="row", limit=5, offset=5)
    assert (len(first.hits), first.has_more) == (5, True)
    assert (len(rest.hits), rest.has_more) == (2, False)
    lines = {h.line_no for h in first.hits} | {h.line_no for h in rest.hits}
    assert lines == set(range(1, 8))


def test_reindexing_never_duplicates_and_a_rewind_replaces_lines(backend, experiment):
    a = _attempt(experiment)
    services.log_chunk_store(attempt=a, offset=0, data=b"alpha\n")
    services.log_chunk_store(attempt=a, offset=11, data=b"gamma\n")
    Attempt.objects.filter(pk=a.pk).update(
        log_bytes=17, status=Attempt.Status.FAILED, exit_code=1, ended_at=timezone.now()
    )
    indexing.log_index_attempt(attempt_id=a.pk)
    indexing.log_index_rebuild(attempt_ids=[a.pk])
    indexing.log_index_attempt(attempt_id=a.pk)
    indexing.log_index_attempt(attempt_id=a.pk)
    get_log_index().refresh()
    assert _search({experiment.pk}, "gamma") == [(str(a.uid), 3)]
    services.log_chunk_store(attempt=a, offset=6, data=b"beta\n")
    indexing.log_index_attempt(attempt_id=a.pk)
    get_log_index().refresh()
    assert _search({experiment.pk}, "beta") == [(str(a.uid), 2)]
    assert _search({experiment.pk}, "gamma") == [(str(a.uid), 3)]


def test_retention_removes_expired_lines_from_the_index(backend, experiment):
    LogRetentionPolicy.objects.create(experiment=experiment, tail_days=7)
    a = _attempt(experiment)
    _write(a, "expired words\n", ended_with=0)
    Attempt.objects.filter(pk=a.pk).update(ended_at=timezone.now() - dt.timedelta(days=8))
    Job.objects.filter(pk=a.job_id).update(state=Job.State.SUCCEEDED)
    assert _search({experiment.pk}, "expired") == [(str(a.uid), 1)]
    retention.logs_retention_enforce()
    get_log_index().refresh()
    assert _search({experiment.pk}, "expired") == []
