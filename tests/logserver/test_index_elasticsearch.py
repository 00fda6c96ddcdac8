"""The Elasticsearch backend, checked by the requests it sends.

No Elasticsearch server can run on the machines these tests were written on,
so the one thing replaced is the official client's HTTP node (the transport's
connection class, ELASTICSEARCH_NODE_CLASS): every request the client would
put on the wire (method, path, headers, body) is recorded and answered with a
canned response. Everything of ours (es_client, the backend, the indexing
service, the setup command) runs as in production. The bodies are asserted
exactly. The behaviour against a real server is covered by
test_log_index_contract.py when ELASTICSEARCH_URL is set; here it skips.
"""

import datetime as dt
import json

import pytest
from elastic_transport import ApiResponseMeta, BaseNode, HttpHeaders
from elastic_transport._node._base import NodeApiResponse
from elasticsearch import Elasticsearch

from logserver import indexing, services
from logserver.index import AttemptLabels, IndexLine, LogIndexError, SearchQuery
from logserver.index.elasticsearch import (
    ElasticsearchLogIndex,
    data_stream_name,
    es_setup,
    ilm_policy,
    index_template,
)
from logserver.models import LogLevel
from prodmon.models import Attempt

T0 = dt.datetime(2025, 3, 1, 14, 3, 22, tzinfo=dt.UTC)


class RecordingNode(BaseNode):
    """Captures each request instead of sending it; answers from `respond`."""

    _CLIENT_META_HTTP_CLIENT = ("rec", "1.0")
    log: list = []
    sent_headers: list = []
    respond = None

    def perform_request(self, method, target, body=None, headers=None, request_timeout=None):
        RecordingNode.log.append((method, target, body))
        RecordingNode.sent_headers.append(dict(headers or {}))
        status, payload = RecordingNode.respond(method, target, body)
        meta = ApiResponseMeta(
            status=status,
            http_version="1.1",
            headers=HttpHeaders(
                {"x-elastic-product": "Elasticsearch", "content-type": "application/json"}
            ),
            duration=0.0,
            node=self.config,
        )
        return NodeApiResponse(meta, json.dumps(payload).encode())

    def close(self):
        pass


def _default_respond(method, target, body):
    if target.startswith("/_bulk"):
        lines = body.decode().splitlines()
        items = []
        for action in lines[0::2]:
            ((op, meta),) = json.loads(action).items()
            items.append({op: {"_index": meta["_index"], "_id": meta["_id"], "status": 201}})
        return 200, {"errors": False, "took": 1, "items": items}
    if "_search" in target:
        return 200, {"hits": {"hits": []}}
    if "_delete_by_query" in target:
        return 200, {"deleted": 0}
    if "_update_by_query" in target:
        return 200, {"updated": 0}
    return 200, {"acknowledged": True}


@pytest.fixture
def wire(settings):
    """The client es_client() builds from the settings, on a recording node."""
    from logserver.index.elasticsearch import es_client

    RecordingNode.log = []
    RecordingNode.sent_headers = []
    RecordingNode.respond = staticmethod(_default_respond)
    settings.ELASTICSEARCH_URL = "http://es.invalid:9200"
    settings.ELASTICSEARCH_NODE_CLASS = RecordingNode
    client = es_client()
    assert isinstance(client, Elasticsearch)
    yield client
    RecordingNode.log = []


def _requests(path_part: str) -> list[tuple[str, str, dict | list | None]]:
    out = []
    for method, target, body in RecordingNode.log:
        if path_part in target:
            if body and target.startswith("/_bulk"):
                parsed = [json.loads(x) for x in body.decode().splitlines()]
            else:
                parsed = json.loads(body) if body else None
            out.append((method, target, parsed))
    return out


LABELS = AttemptLabels(
    attempt_id=7,
    attempt_uid="6f9619ff-8b86-d011-b42d-00c04fc964ff",
    experiment_id=1,
    experiment="dune",
    campaign="mc2025a",
    stage="gen",
    job="gen_00042.root",
    host="fnpc3101.fnal.gov",
    site="FNAL",
    exit_code=65,
    outcome="failure",
)


def test_it_bulk_creates_one_ecs_document_per_line_with_a_deterministic_id(wire):
    ElasticsearchLogIndex(wire).index_lines(
        LABELS,
        [
            IndexLine(1, 0, "Begin processing", T0, LogLevel.INFO),
            IndexLine(2, 17, "Fatal Root Error", T0, LogLevel.ERROR),
        ],
    )
    [(method, target, body)] = _requests("/_bulk")
    assert (method, target) == ("PUT", "/_bulk")
    [headers] = RecordingNode.sent_headers
    assert headers["content-type"].startswith("application/vnd.elasticsearch+x-ndjson")
    identity = {
        "experiment": "dune",
        "campaign": "mc2025a",
        "stage": "gen",
        "job": "gen_00042.root",
        "attempt": LABELS.attempt_uid,
    }
    common = {
        "@timestamp": "2025-03-01T14:03:22+00:00",
        "ecs": {"version": "8.11.0"},
        "data_stream": {"type": "logs", "dataset": "prodmon", "namespace": "dune"},
        "host": {"name": "fnpc3101.fnal.gov"},
        "process": {"exit_code": 65},
    }
    assert body == [
        {"create": {"_index": "logs-prodmon-dune", "_id": f"{LABELS.attempt_uid}:1"}},
        {
            **common,
            "message": "Begin processing",
            "event": {"outcome": "failure", "sequence": 1, "dataset": "prodmon"},
            "log": {"level": "info", "offset": 0},
            "labels": {**identity, "line": "1", "site": "FNAL"},
        },
        {"create": {"_index": "logs-prodmon-dune", "_id": f"{LABELS.attempt_uid}:2"}},
        {
            **common,
            "message": "Fatal Root Error",
            "event": {"outcome": "failure", "sequence": 2, "dataset": "prodmon"},
            "log": {"level": "error", "offset": 17},
            "labels": {**identity, "line": "2", "site": "FNAL"},
        },
    ]
    # On the wire: ndjson, an action line then its document, in the bulk helper's key order.
    raw = RecordingNode.log[0][2].decode()
    assert raw.endswith("\n")
    assert raw.splitlines()[0] == (
        '{"create":{"_id":"6f9619ff-8b86-d011-b42d-00c04fc964ff:1","_index":"logs-prodmon-dune"}}'
    )


def test_a_running_attempt_s_lines_carry_no_exit_code_and_an_unknown_outcome(wire):
    running = AttemptLabels(**{**LABELS.__dict__, "exit_code": None, "outcome": "unknown"})
    ElasticsearchLogIndex(wire).index_lines(running, [IndexLine(1, 0, "x", T0, LogLevel.INFO)])
    [(_, _, body)] = _requests("/_bulk")
    assert "process" not in body[1]
    assert body[1]["event"]["outcome"] == "unknown"


def test_a_line_indexed_before_counts_as_done_but_other_refusals_raise(wire):
    def respond(method, target, body):
        if not target.startswith("/_bulk"):
            return _default_respond(method, target, body)
        return 200, {
            "errors": True,
            "items": [
                {"create": {"_id": "a:1", "status": 409, "error": {"type": "version_conflict"}}},
                {"create": {"_id": "a:2", "status": 201}},
            ],
        }

    RecordingNode.respond = staticmethod(respond)
    index = ElasticsearchLogIndex(wire)
    lines = [IndexLine(1, 0, "a", T0, 0), IndexLine(2, 2, "b", T0, 0)]
    index.index_lines(LABELS, lines)  # the 409 is not an error

    def refuse(method, target, body):
        return 200, {
            "errors": True,
            "items": [
                {"create": {"_id": "a:1", "status": 400, "error": {"type": "mapper_parsing"}}},
                {"create": {"_id": "a:2", "status": 201}},
            ],
        }

    RecordingNode.respond = staticmethod(refuse)
    with pytest.raises(LogIndexError, match="mapper_parsing"):
        index.index_lines(LABELS, lines)


def test_a_server_error_becomes_a_log_index_error(wire):
    RecordingNode.respond = staticmethod(lambda m, t, b: (503, {"error": "unavailable"}))
    with pytest.raises(LogIndexError):
        ElasticsearchLogIndex(wire).delete_lines_from(LABELS, 3)


def test_it_installs_the_ilm_policy_the_template_and_a_data_stream_per_experiment(wire):
    def respond(method, target, body):
        if target == "/_data_stream/logs-prodmon-mu2e":
            return 400, {
                "error": {"type": "resource_already_exists_exception", "reason": "exists"},
                "status": 400,
            }
        return _default_respond(method, target, body)

    RecordingNode.respond = staticmethod(respond)
    done = es_setup(wire, experiments=["dune", "mu2e", "dune-nd"])
    assert done[-3:] == [
        "data stream logs-prodmon-dune created",
        "data stream logs-prodmon-mu2e exists",
        "data stream logs-prodmon-dune_nd created",
    ]
    [(method, _, policy)] = _requests("/_ilm/policy/logs-prodmon")
    assert method == "PUT"
    assert policy == {
        "policy": {
            "phases": {
                "hot": {
                    "actions": {"rollover": {"max_age": "7d", "max_primary_shard_size": "50gb"}}
                }
            },
            "_meta": {"managed_by": "prodmon"},
        }
    }
    [(method, _, template)] = _requests("/_index_template/logs-prodmon")
    assert method == "PUT"
    assert template == {
        "index_patterns": ["logs-prodmon-*"],
        "data_stream": {},
        "priority": 200,
        "template": {
            "settings": {"index.lifecycle.name": "logs-prodmon"},
            "mappings": {
                "dynamic_templates": [
                    {
                        "labels_as_keywords": {
                            "path_match": "labels.*",
                            "mapping": {"type": "keyword"},
                        }
                    }
                ],
                "properties": {
                    "@timestamp": {"type": "date"},
                    "message": {"type": "text"},
                    "ecs": {"properties": {"version": {"type": "keyword"}}},
                    "data_stream": {
                        "properties": {
                            "type": {"type": "constant_keyword"},
                            "dataset": {"type": "constant_keyword"},
                            "namespace": {"type": "constant_keyword"},
                        }
                    },
                    "host": {"properties": {"name": {"type": "keyword"}}},
                    "process": {"properties": {"exit_code": {"type": "long"}}},
                    "event": {
                        "properties": {
                            "outcome": {"type": "keyword"},
                            "sequence": {"type": "long"},
                            "dataset": {"type": "keyword"},
                        }
                    },
                    "log": {
                        "properties": {"level": {"type": "keyword"}, "offset": {"type": "long"}}
                    },
                    "labels": {"type": "object", "dynamic": True},
                },
            },
        },
        "_meta": {"managed_by": "prodmon", "description": "prodmon job logs, one line a document"},
    }
    streams = [(m, t, b) for m, t, b in RecordingNode.log if t.startswith("/_data_stream/")]
    assert streams == [
        ("PUT", "/_data_stream/logs-prodmon-dune", None),
        ("PUT", "/_data_stream/logs-prodmon-mu2e", None),
        ("PUT", "/_data_stream/logs-prodmon-dune_nd", None),
    ]


def test_the_ilm_policy_can_add_a_delete_phase():
    assert ilm_policy(delete_after_days=90)["phases"]["delete"] == {
        "min_age": "90d",
        "actions": {"delete": {}},
    }
    assert index_template("logs-x")["index_patterns"] == ["logs-x-*"]
    assert data_stream_name("DUNE-ND", "logs-x") == "logs-x-dune_nd"


@pytest.mark.django_db
def test_the_search_is_scoped_by_experiment_and_carries_every_filter(
    wire, make_attempt, experiment, other_experiment
):
    attempt = make_attempt()

    def respond(method, target, body):
        if "_search" in target:
            source = {
                "@timestamp": "2025-03-01T14:03:22+00:00",
                "message": "Fatal Root Error",
                "labels": {"attempt": str(attempt.uid)},
                "event": {"sequence": 2},
                "log": {"offset": 17, "level": "error"},
            }
            return 200, {"hits": {"hits": [{"_source": source}]}}
        return _default_respond(method, target, body)

    RecordingNode.respond = staticmethod(respond)
    page = ElasticsearchLogIndex(wire).search(
        SearchQuery(
            text='fatal "root error"',
            experiment_ids=frozenset({experiment.pk}),
            campaign="mc",
            stage="gen",
            site="FNAL",
            node="wn01.fnal.gov",
            exit_code=65,
            since=T0,
            until=T0 + dt.timedelta(days=1),
            attempt_ids=[attempt.pk],
            limit=20,
            offset=40,
        )
    )
    assert [(h.attempt_uid, h.line_no, h.offset, h.level) for h in page.hits] == [
        (str(attempt.uid), 2, 17, LogLevel.ERROR)
    ]
    [(method, target, body)] = _requests("/_search")
    assert target.startswith("/logs-prodmon-dune/_search?")
    assert "ignore_unavailable=true" in target
    assert "_source_includes=" in target
    assert body == {
        "query": {
            "bool": {
                "filter": [
                    {"terms": {"labels.experiment": ["dune"]}},
                    {"term": {"labels.campaign": "mc"}},
                    {"term": {"labels.stage": "gen"}},
                    {"term": {"labels.site": "FNAL"}},
                    {"term": {"host.name": "wn01.fnal.gov"}},
                    {"term": {"process.exit_code": 65}},
                    {
                        "range": {
                            "@timestamp": {
                                "gte": "2025-03-01T14:03:22+00:00",
                                "lt": "2025-03-02T14:03:22+00:00",
                            }
                        }
                    },
                    {"terms": {"labels.attempt": [str(attempt.uid)]}},
                ],
                "must": [
                    {"match": {"message": {"query": "fatal", "operator": "and"}}},
                    {"match_phrase": {"message": "root error"}},
                ],
            }
        },
        "sort": [{"@timestamp": {"order": "desc"}}, {"event.sequence": {"order": "desc"}}],
        "from": 40,
        "size": 21,
        "track_total_hits": False,
    }


@pytest.mark.django_db
def test_a_search_with_no_experiment_in_scope_sends_nothing(wire):
    page = ElasticsearchLogIndex(wire).search(SearchQuery(text="x", experiment_ids=frozenset()))
    assert page.hits == []
    assert RecordingNode.log == []


def test_rewinds_retention_and_the_end_of_a_job_are_by_query(wire):
    index = ElasticsearchLogIndex(wire)
    index.delete_lines_from(LABELS, 12)
    index.delete_attempts([LABELS])
    index.attempt_ended(LABELS)
    rewind, retention = _requests("/_delete_by_query")
    assert rewind[1].startswith("/logs-prodmon-dune/_delete_by_query?")
    assert "conflicts=proceed" in rewind[1]
    assert "refresh=true" in rewind[1]
    assert rewind[2] == {
        "query": {
            "bool": {
                "filter": [
                    {"term": {"labels.attempt": LABELS.attempt_uid}},
                    {"range": {"event.sequence": {"gte": 12}}},
                ]
            }
        }
    }
    assert retention[2] == {"query": {"terms": {"labels.attempt": [LABELS.attempt_uid]}}}
    [(_, target, body)] = _requests("/_update_by_query")
    assert target.startswith("/logs-prodmon-dune/_update_by_query?")
    assert body["query"] == {"bool": {"filter": [{"term": {"labels.attempt": LABELS.attempt_uid}}]}}
    assert body["script"]["params"] == {"exit_code": 65, "outcome": "failure"}
    assert "ctx._source.process.exit_code = params.exit_code" in body["script"]["source"]


@pytest.mark.django_db
def test_the_indexing_service_drives_the_elasticsearch_backend(wire, make_attempt, settings):
    settings.PRODMON_LOG_INDEX = "elasticsearch"
    attempt = make_attempt()
    services.log_chunk_store(attempt=attempt, offset=0, data=b"one\ntwo\n")
    Attempt.objects.filter(pk=attempt.pk).update(log_bytes=8)
    indexing.log_index_attempt(attempt_id=attempt.pk)
    [(_, _, body)] = _requests("/_bulk")
    assert [doc["message"] for doc in body[1::2]] == ["one", "two"]
    assert [a["create"]["_id"] for a in body[0::2]] == [f"{attempt.uid}:1", f"{attempt.uid}:2"]
    assert body[1]["labels"]["campaign"] == "mc"
    assert _requests("/_update_by_query") == []
    Attempt.objects.filter(pk=attempt.pk).update(status="failed", exit_code=2)
    indexing.log_index_attempt(attempt_id=attempt.pk)
    [(_, _, update)] = _requests("/_update_by_query")
    assert update["script"]["params"] == {"exit_code": 2, "outcome": "failure"}


@pytest.mark.django_db
def test_the_setup_command_prints_or_installs(wire, experiment, other_experiment):
    import io

    from django.core.management import call_command

    out = io.StringIO()
    call_command("logindex_es_setup", "--print", "--ilm-delete-days", "400", stdout=out)
    printed = json.loads(out.getvalue())
    assert printed["data streams"] == ["logs-prodmon-dune", "logs-prodmon-mu2e"]
    assert printed["PUT _ilm/policy/logs-prodmon"]["policy"]["phases"]["delete"]["min_age"] == (
        "400d"
    )
    assert RecordingNode.log == []

    out = io.StringIO()
    call_command("logindex_es_setup", "--ilm-delete-days", "400", stdout=out)
    assert "data stream logs-prodmon-mu2e created" in out.getvalue()
    assert [(m, t) for m, t, _ in RecordingNode.log] == [
        ("PUT", "/_ilm/policy/logs-prodmon"),
        ("PUT", "/_index_template/logs-prodmon"),
        ("PUT", "/_data_stream/logs-prodmon-dune"),
        ("PUT", "/_data_stream/logs-prodmon-mu2e"),
    ]
    assert json.loads(RecordingNode.log[0][2]) == {
        "policy": {
            "phases": {
                "hot": {
                    "actions": {"rollover": {"max_age": "7d", "max_primary_shard_size": "50gb"}}
                },
                "delete": {"min_age": "400d", "actions": {"delete": {}}},
            },
            "_meta": {"managed_by": "prodmon"},
        }
    }
    assert json.loads(RecordingNode.log[1][2]) == printed["PUT _index_template/logs-prodmon"]
