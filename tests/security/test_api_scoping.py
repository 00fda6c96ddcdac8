"""A token (or a member) of experiment B can neither read nor write experiment
A, through any URL of the API. The walk discovers URL patterns itself, so a
new endpoint is covered the day it is added."""

import json
import re
import uuid

import pytest
from django.apps import apps
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from logserver.models import IngestEvent, LogChunk
from prodmon import services
from prodmon.models import Attempt, OutputFile, Role
from tests.factories import ExperimentFactory, MembershipFactory, make_token

# Data of A that B never sends itself (B does send A's names and attempt uid
# when it tries to write, and an error may fairly echo B's own request).
MARKERS = (
    "Secret A Title",
    "SECRET-A-LOG-LINE",
    "secret-a-node",
    "secret-a-job.root.out",
    "run-secret-a-cmd",
)
METHODS = ("get", "post", "put", "patch", "delete")
API_PREFIXES = ("api/", "loki/")


def _walk(patterns, prefix=""):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern)


def _api_routes() -> list[str]:
    routes = sorted({r for r in _walk(get_resolver().url_patterns) if r.startswith(API_PREFIXES)})
    assert routes, "no API routes found"
    return routes


def _concrete(route: str, values: dict[str, list[str]]) -> list[str]:
    """Fill <conv:name> (and regex groups) with every candidate of that converter."""
    paths = [route.lstrip("^").rstrip("$")]
    for match in re.finditer(r"<(?:(\w+):)?(\w+)>", route):
        conv = match.group(1) or "str"
        paths = [
            p.replace(match.group(0), candidate, 1)
            for p in paths
            for candidate in values.get(conv, values["str"])
        ]
    return ["/" + p for p in paths]


@pytest.fixture
def world(db):
    a = ExperimentFactory(name="exp-a")
    b = ExperimentFactory(name="exp-b")
    before = {
        m: (m.objects.order_by("-pk").values_list("pk", flat=True).first() or 0)
        for m in apps.get_models()
    }
    campaign = services.campaign_create(
        experiment=a, name="secret-a-campaign", title="Secret A Title"
    )
    stage = services.stage_create(
        campaign=campaign, name="secret-a-stage", command="run-secret-a-cmd"
    )
    identity = services.AttemptIdentity(
        campaign="secret-a-campaign",
        stage="secret-a-stage",
        job="secret-a-job.root",
        attempt=uuid.uuid4(),
    )
    now = timezone.now()
    services.attempt_record_start(
        experiment=a, identity=identity, at=now, hostname="secret-a-node.example", site="A"
    )
    attempt, _ = services.attempt_record_end(
        experiment=a,
        identity=identity,
        at=now,
        exit_code=3,
        signal=None,
        metrics=services.Metrics(wall_s=10),
        outputs=[services.OutputSpec(name="secret-a-job.root.out", size=5)],
    )
    LogChunk.objects.create(attempt=attempt, offset=0, length=18, data=b"SECRET-A-LOG-LINE\n")
    token_a, _ = make_token(a, scopes=("ingest", "read"), name="a")
    _, raw_b = make_token(b, scopes=("ingest", "read"), name="b")
    services.campaign_create(experiment=b, name="b-campaign")
    member_b = MembershipFactory(experiment=b, role=Role.ADMIN).user
    a_pks = set()
    for model in apps.get_models():
        a_pks.update(
            model.objects.filter(pk__gt=before[model]).values_list("pk", flat=True)
            if model._meta.pk.get_internal_type() in ("AutoField", "BigAutoField")
            else []
        )
    ints = sorted(str(pk) for pk in a_pks if isinstance(pk, int))[:40]
    values = {
        "int": ints,
        "uuid": [str(attempt.uid)],
        "str": [
            "secret-a-campaign",
            "secret-a-stage",
            "secret-a-job.root",
            "exp-a",
            str(attempt.uid),
            *ints[:5],
        ],
        "slug": ["secret-a-campaign", "secret-a-stage", "exp-a"],
        "path": ["secret-a-job.root"],
    }
    return {
        "a": a,
        "attempt": attempt,
        "stage": stage,
        "values": values,
        "token_a": token_a,
        "raw_b": raw_b,
        "member_b": member_b,
    }


def _body(world) -> str:
    uid = str(world["attempt"].uid)
    event = {
        "event_id": uuid.uuid4().hex,
        "campaign": "secret-a-campaign",
        "stage": "secret-a-stage",
        "job": "secret-a-job.root",
        "attempt": uid,
        "host": "evil",
        "exit_code": 0,
        "log": {"offset": 0, "data": "overwrite"},
    }
    return json.dumps(
        {
            **event,
            "events": [dict(event, type="end")],
            "streams": [
                {
                    "stream": {
                        "campaign": "secret-a-campaign",
                        "stage": "secret-a-stage",
                        "job": "secret-a-job.root",
                        "attempt": uid,
                    },
                    "values": [[str(timezone.now().timestamp() * 1e9), "injected"]],
                }
            ],
            "inputs": ["evil.root"],
        }
    )


def _snapshot(world) -> dict:
    attempt = Attempt.objects.get(pk=world["attempt"].pk)
    return {
        "status": attempt.status,
        "exit_code": attempt.exit_code,
        "chunks": list(LogChunk.objects.filter(attempt=attempt).values_list("offset", "data")),
        "events": IngestEvent.objects.filter(experiment=world["a"]).count(),
        "attempts": Attempt.objects.filter(job__stage__campaign__experiment=world["a"]).count(),
        "outputs": OutputFile.objects.filter(campaign__experiment=world["a"]).count(),
    }


def _leaks(response) -> list[str]:
    if not 200 <= response.status_code < 300:
        return []
    content = b"".join(response.streaming_content) if response.streaming else response.content
    text = content.decode(errors="replace")
    return [m for m in MARKERS if m in text]


def test_no_api_url_lets_experiment_b_read_or_write_experiment_a(world):
    token_client = Client(HTTP_AUTHORIZATION=f"Bearer {world['raw_b']}")
    session_client = Client()
    session_client.force_login(world["member_b"])
    before = _snapshot(world)
    tried, problems = 0, []
    for route in _api_routes():
        for path in _concrete(route, world["values"]):
            for method in METHODS:
                for label, client in (("token-b", token_client), ("member-b", session_client)):
                    call = getattr(client, method)
                    if method == "get":
                        response = call(path)
                    else:
                        response = call(path, data=_body(world), content_type="application/json")
                    tried += 1
                    if response.status_code >= 500:
                        problems.append(f"{label} {method.upper()} {path}: {response.status_code}")
                    leaked = _leaks(response)
                    if leaked:
                        problems.append(f"{label} {method.upper()} {path} leaked {leaked}")
    assert tried > 50
    assert not problems, "\n".join(problems)
    assert _snapshot(world) == before


def test_the_walk_would_notice_a_leak(world):
    """The same walk as A's own token does see A's data: the check can fail."""
    _, raw_a = make_token(world["a"], scopes=("read",), name="a-reader")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw_a}")
    seen = []
    for route in _api_routes():
        for path in _concrete(route, world["values"]):
            seen += _leaks(client.get(path))
    assert "Secret A Title" in seen
    assert "secret-a-node" in seen
