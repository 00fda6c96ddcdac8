"""The Elasticsearch log index (official `elasticsearch` client, 8.x).

- One data stream per experiment, `<prefix>-<experiment>` (default prefix
  `logs-prodmon`, so `logs-prodmon-dune`), matched by one index template that
  maps ECS fields and names the ILM policy (rollover; an optional delete phase).
- Documents use ECS names: @timestamp, message, host.name, process.exit_code,
  event.outcome, log.level, log.offset, event.sequence (the line number, for
  sorting), and labels.{experiment,campaign,stage,job,attempt,line,site}.
- Writes go through helpers.streaming_bulk with op_type `create` (what data
  streams take) and a deterministic _id `<attempt uid>:<line>`: a re-indexed
  line answers 409 and is counted as already there, never duplicated.
- Retention and rewinds delete with delete_by_query on the attempt's label;
  the exit code of lines indexed while the job ran is set with
  update_by_query when it ends.

Nothing here was run against a live server on the machines this was written
on (none can be installed there): tests/logserver/test_index_elasticsearch.py
checks the exact requests, and the shared contract suite runs against a real
server when ELASTICSEARCH_URL is set (deploy/compose.yaml has one).
"""

import datetime as dt
import functools
import threading
from collections.abc import Iterable, Iterator, Sequence

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from logserver.conf import setting
from logserver.index.base import (
    AttemptLabels,
    IndexLine,
    LogIndex,
    LogIndexError,
    SearchHit,
    SearchPage,
    SearchQuery,
)
from logserver.models import LogLevel

ECS_VERSION = "8.11.0"
LEVEL_NAMES = {LogLevel.INFO: "info", LogLevel.WARNING: "warning", LogLevel.ERROR: "error"}
LEVEL_VALUES = {v: k for k, v in LEVEL_NAMES.items()}
BULK_CHUNK = 1000

_clients: dict[tuple, object] = {}
_clients_lock = threading.Lock()


def data_stream_prefix() -> str:
    return setting("PRODMON_ES_DATA_STREAM_PREFIX")


def data_stream_namespace(experiment: str) -> str:
    # type-dataset-namespace: by convention the namespace holds no hyphen.
    return experiment.lower().replace("-", "_")


def data_stream_name(experiment: str, prefix: str | None = None) -> str:
    return f"{prefix or data_stream_prefix()}-{data_stream_namespace(experiment)}"


def policy_name(prefix: str | None = None) -> str:
    return prefix or data_stream_prefix()


def index_mappings() -> dict:
    return {
        "dynamic_templates": [
            {"labels_as_keywords": {"path_match": "labels.*", "mapping": {"type": "keyword"}}}
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
            "log": {"properties": {"level": {"type": "keyword"}, "offset": {"type": "long"}}},
            "labels": {"type": "object", "dynamic": True},
        },
    }


def ilm_policy(*, delete_after_days: int = 0) -> dict:
    """Rollover in the hot phase. Deleting is logs_retention's job (it spares
    jobs still open in triage, which ILM cannot know about); a site may still
    ask ILM to drop backing indices after `delete_after_days` as a backstop."""
    phases: dict = {
        "hot": {
            "actions": {
                "rollover": {
                    "max_age": setting("PRODMON_ES_ROLLOVER_MAX_AGE"),
                    "max_primary_shard_size": setting("PRODMON_ES_ROLLOVER_MAX_PRIMARY_SHARD_SIZE"),
                }
            }
        }
    }
    if delete_after_days > 0:
        phases["delete"] = {"min_age": f"{delete_after_days}d", "actions": {"delete": {}}}
    return {"phases": phases, "_meta": {"managed_by": "prodmon"}}


def index_template(prefix: str | None = None) -> dict:
    prefix = prefix or data_stream_prefix()
    return {
        "index_patterns": [f"{prefix}-*"],
        "data_stream": {},
        # Above the built-in logs-*-* template (priority 100).
        "priority": 200,
        "template": {
            "settings": {"index.lifecycle.name": policy_name(prefix)},
            "mappings": index_mappings(),
        },
        "_meta": {"managed_by": "prodmon", "description": "prodmon job logs, one line a document"},
    }


def document_id(labels: AttemptLabels, line_no: int) -> str:
    return f"{labels.attempt_uid}:{line_no}"


def line_document(labels: AttemptLabels, line: IndexLine) -> dict:
    doc: dict = {
        "@timestamp": line.timestamp.astimezone(dt.UTC).isoformat(),
        "message": line.text,
        "ecs": {"version": ECS_VERSION},
        "data_stream": {
            "type": "logs",
            "dataset": "prodmon",
            "namespace": data_stream_namespace(labels.experiment),
        },
        "event": {
            "outcome": labels.outcome,
            "sequence": line.line_no,
            "dataset": "prodmon",
        },
        "log": {"level": LEVEL_NAMES.get(line.level, "info"), "offset": line.offset},
        "labels": {
            "experiment": labels.experiment,
            "campaign": labels.campaign,
            "stage": labels.stage,
            "job": labels.job,
            "attempt": labels.attempt_uid,
            "line": str(line.line_no),
        },
    }
    if labels.host:
        doc["host"] = {"name": labels.host}
    if labels.site:
        doc["labels"]["site"] = labels.site
    if labels.exit_code is not None:
        doc["process"] = {"exit_code": labels.exit_code}
    return doc


def bulk_actions(labels: AttemptLabels, lines: Iterable[IndexLine]) -> Iterator[dict]:
    index = data_stream_name(labels.experiment)
    for line in lines:
        yield {
            "_op_type": "create",
            "_index": index,
            "_id": document_id(labels, line.line_no),
            "_source": line_document(labels, line),
        }


def search_request(
    query: SearchQuery, *, experiments: Sequence[str], attempt_uids: Sequence[str] | None
) -> dict:
    """The body of the search, as keyword arguments of Elasticsearch.search."""
    parsed = query.parsed
    filters: list[dict] = [{"terms": {"labels.experiment": sorted(experiments)}}]
    for value, fieldname in (
        (query.campaign, "labels.campaign"),
        (query.stage, "labels.stage"),
        (query.site, "labels.site"),
        (query.node, "host.name"),
    ):
        if value:
            filters.append({"term": {fieldname: value}})
    if query.exit_code is not None:
        filters.append({"term": {"process.exit_code": query.exit_code}})
    if query.since is not None or query.until is not None:
        bounds = {}
        if query.since is not None:
            bounds["gte"] = query.since.astimezone(dt.UTC).isoformat()
        if query.until is not None:
            bounds["lt"] = query.until.astimezone(dt.UTC).isoformat()
        filters.append({"range": {"@timestamp": bounds}})
    if attempt_uids is not None:
        filters.append({"terms": {"labels.attempt": sorted(attempt_uids)}})
    must: list[dict] = []
    if parsed.words:
        must.append({"match": {"message": {"query": " ".join(parsed.words), "operator": "and"}}})
    for phrase in parsed.phrases:
        must.append({"match_phrase": {"message": phrase}})
    return {
        "index": ",".join(sorted({data_stream_name(e) for e in experiments})),
        "ignore_unavailable": True,
        "allow_no_indices": True,
        "query": {"bool": {"filter": filters, "must": must}},
        "sort": [{"@timestamp": {"order": "desc"}}, {"event.sequence": {"order": "desc"}}],
        "from_": query.offset,
        "size": query.limit + 1,
        "track_total_hits": False,
        "source_includes": [
            "@timestamp",
            "message",
            "labels.attempt",
            "event.sequence",
            "log.offset",
            "log.level",
        ],
    }


def _hit(source: dict) -> SearchHit:
    return SearchHit(
        attempt_uid=source["labels"]["attempt"],
        line_no=int(source["event"]["sequence"]),
        offset=int(source.get("log", {}).get("offset", 0)),
        text=source.get("message", ""),
        timestamp=dt.datetime.fromisoformat(source["@timestamp"].replace("Z", "+00:00")),
        level=LEVEL_VALUES.get(source.get("log", {}).get("level", "info"), LogLevel.INFO),
    )


def es_client():
    """The shared client for ELASTICSEARCH_URL (thread-safe, pooled)."""
    from elasticsearch import Elasticsearch

    url = setting("ELASTICSEARCH_URL")
    if not url:
        raise ImproperlyConfigured("PRODMON_LOG_INDEX=elasticsearch needs ELASTICSEARCH_URL")
    api_key = setting("ELASTICSEARCH_API_KEY")
    ca_certs = setting("ELASTICSEARCH_CA_CERTS")
    verify = setting("ELASTICSEARCH_VERIFY_CERTS")
    # The client's HTTP node class ("urllib3", the default, or "requests"; the
    # tests give a recording node: the only thing they replace).
    node_class = getattr(settings, "ELASTICSEARCH_NODE_CLASS", None)
    key = (url, api_key, ca_certs, verify, node_class)
    with _clients_lock:
        if key not in _clients:
            kwargs: dict = {"request_timeout": 30, "retry_on_timeout": True, "max_retries": 3}
            if node_class:
                kwargs["node_class"] = node_class
            if api_key:
                kwargs["api_key"] = api_key
            if url.startswith("https"):
                kwargs["verify_certs"] = verify
                if ca_certs:
                    kwargs["ca_certs"] = ca_certs
            _clients[key] = Elasticsearch(url, **kwargs)
        return _clients[key]


def _translated(method):
    """Server and connection errors surface as LogIndexError, which the index
    task retries and the reconciler catches up on."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        from elastic_transport import TransportError
        from elasticsearch import ApiError

        try:
            return method(*args, **kwargs)
        except (ApiError, TransportError) as exc:
            raise LogIndexError(f"Elasticsearch: {exc}") from exc

    return wrapper


class ElasticsearchLogIndex(LogIndex):
    name = "elasticsearch"

    def __init__(self, client):
        self.client = client

    def ping(self) -> str:
        if not self.client.ping():
            raise LogIndexError("Elasticsearch did not answer a ping")
        return "ok (elasticsearch)"

    @classmethod
    def from_settings(cls) -> "ElasticsearchLogIndex":
        return cls(es_client())

    def _all_streams(self) -> str:
        return f"{data_stream_prefix()}-*"

    @_translated
    def index_lines(self, labels: AttemptLabels, lines: Sequence[IndexLine]) -> None:
        from elasticsearch import helpers

        failures = []
        for ok, item in helpers.streaming_bulk(
            self.client,
            bulk_actions(labels, lines),
            chunk_size=BULK_CHUNK,
            raise_on_error=False,
            max_retries=3,
        ):
            if ok:
                continue
            info = next(iter(item.values()))
            if info.get("status") == 409:
                continue  # indexed before: the deterministic _id makes this a no-op
            failures.append(info)
        if failures:
            raise LogIndexError(
                f"{len(failures)} of the attempt's lines were refused, first: {failures[0]}"
            )

    def _attempt_query(self, labels: AttemptLabels, from_line: int | None = None) -> dict:
        filters: list[dict] = [{"term": {"labels.attempt": labels.attempt_uid}}]
        if from_line is not None:
            filters.append({"range": {"event.sequence": {"gte": from_line}}})
        return {"bool": {"filter": filters}}

    @_translated
    def delete_lines_from(self, labels: AttemptLabels, line_no: int) -> None:
        self.client.delete_by_query(
            index=data_stream_name(labels.experiment),
            query=self._attempt_query(labels, line_no),
            conflicts="proceed",
            refresh=True,
            ignore_unavailable=True,
            allow_no_indices=True,
        )

    @_translated
    def delete_attempts(self, labels: Sequence[AttemptLabels]) -> None:
        by_stream: dict[str, list[str]] = {}
        for label in labels:
            by_stream.setdefault(data_stream_name(label.experiment), []).append(label.attempt_uid)
        for stream, uids in by_stream.items():
            for i in range(0, len(uids), 1000):
                self.client.delete_by_query(
                    index=stream,
                    query={"terms": {"labels.attempt": uids[i : i + 1000]}},
                    conflicts="proceed",
                    refresh=True,
                    ignore_unavailable=True,
                    allow_no_indices=True,
                )

    @_translated
    def attempt_ended(self, labels: AttemptLabels) -> None:
        self.client.update_by_query(
            index=data_stream_name(labels.experiment),
            query=self._attempt_query(labels),
            script={
                "lang": "painless",
                "source": (
                    "if (ctx._source.process == null) { ctx._source.process = [:]; } "
                    "ctx._source.process.exit_code = params.exit_code; "
                    "if (ctx._source.event == null) { ctx._source.event = [:]; } "
                    "ctx._source.event.outcome = params.outcome;"
                ),
                "params": {"exit_code": labels.exit_code, "outcome": labels.outcome},
            },
            conflicts="proceed",
            refresh=True,
            ignore_unavailable=True,
            allow_no_indices=True,
        )

    @_translated
    def search(self, query: SearchQuery) -> SearchPage:
        from prodmon.models import Attempt, Experiment

        if query.parsed.is_empty or not query.experiment_ids:
            return SearchPage()
        experiments = list(
            Experiment.objects.filter(pk__in=query.experiment_ids).values_list("name", flat=True)
        )
        if not experiments:
            return SearchPage()
        uids = None
        if query.attempt_ids is not None:
            uids = [
                str(u)
                for u in Attempt.objects.filter(pk__in=list(query.attempt_ids)).values_list(
                    "uid", flat=True
                )
            ]
            if not uids:
                return SearchPage()
        response = self.client.search(
            **search_request(query, experiments=experiments, attempt_uids=uids)
        )
        raw = response["hits"]["hits"]
        hits = [_hit(h["_source"]) for h in raw[: query.limit]]
        return SearchPage(hits=hits, has_more=len(raw) > query.limit)

    @_translated
    def refresh(self) -> None:
        self.client.indices.refresh(
            index=self._all_streams(), ignore_unavailable=True, allow_no_indices=True
        )


def es_setup(client, *, experiments: Sequence[str], delete_after_days: int = 0) -> list[str]:
    """Install (or update) the ILM policy and the index template, and create a
    data stream for each experiment. Idempotent. Returns what it did."""
    from elasticsearch import BadRequestError

    prefix = data_stream_prefix()
    done = []
    client.ilm.put_lifecycle(
        name=policy_name(prefix), policy=ilm_policy(delete_after_days=delete_after_days)
    )
    done.append(f"ILM policy {policy_name(prefix)}")
    template = index_template(prefix)
    client.indices.put_index_template(
        name=prefix,
        index_patterns=template["index_patterns"],
        data_stream=template["data_stream"],
        priority=template["priority"],
        template=template["template"],
        meta=template["_meta"],
    )
    done.append(f"index template {prefix} for {prefix}-*")
    for experiment in experiments:
        name = data_stream_name(experiment, prefix)
        try:
            client.indices.create_data_stream(name=name)
            done.append(f"data stream {name} created")
        except BadRequestError as exc:
            if "resource_already_exists_exception" not in str(exc):
                raise
            done.append(f"data stream {name} exists")
    return done
