"""Log search: the page and the JSON API, scoped to the caller's experiments."""

import pytest
from django.test import Client

from logserver import indexing, services
from prodmon.models import Attempt, Role
from tests.factories import (
    AttemptFactory,
    CampaignFactory,
    JobFactory,
    MembershipFactory,
    NodeFactory,
    StageFactory,
    UserFactory,
    make_token,
)

pytestmark = pytest.mark.django_db


def _attempt_with_log(experiment, text: str, campaign="mc", exit_code=None, host="wn01"):
    stage = StageFactory(campaign=CampaignFactory(experiment=experiment, name=campaign))
    attempt = AttemptFactory(
        job=JobFactory(stage=stage),
        node=NodeFactory(hostname=host, site="FNAL"),
        exit_code=exit_code,
        log_bytes=len(text.encode()),
    )
    services.log_chunk_store(attempt=attempt, offset=0, data=text.encode())
    if exit_code is not None:
        Attempt.objects.filter(pk=attempt.pk).update(status="failed")
    indexing.log_index_attempt(attempt_id=attempt.pk)
    return attempt


def _login(experiment) -> Client:
    user = UserFactory()
    MembershipFactory(user=user, experiment=experiment, role=Role.VIEWER)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def two_experiments(experiment, other_experiment):
    mine = _attempt_with_log(experiment, "ok\nFatal Root Error: file not found\n", exit_code=65)
    theirs = _attempt_with_log(other_experiment, "Fatal Root Error: their secret\n", exit_code=1)
    return mine, theirs


def test_the_api_answers_hits_with_links_to_the_line(two_experiments, experiment):
    mine, _ = two_experiments
    r = _login(experiment).get("/api/v1/logs/search", {"q": "fatal error"})
    assert r.status_code == 200, r.content
    [hit] = r.json()["results"]
    assert hit["attempt"] == str(mine.uid)
    assert (hit["line"], hit["experiment"], hit["exit_code"], hit["level"]) == (
        2,
        "dune",
        65,
        "error",
    )
    assert hit["url"].endswith(f"/attempts/{mine.uid}/log?line=2#L2")
    assert r.json()["has_more"] is False


def test_a_member_of_one_experiment_never_sees_the_other_s_logs(
    two_experiments, experiment, other_experiment
):
    mine, theirs = two_experiments
    for client, expected in ((_login(experiment), mine), (_login(other_experiment), theirs)):
        results = client.get("/api/v1/logs/search", {"q": "fatal"}).json()["results"]
        assert [h["attempt"] for h in results] == [str(expected.uid)]
    assert _login(experiment).get("/api/v1/logs/search", {"q": "secret"}).json()["results"] == []
    nobody = Client()
    nobody.force_login(UserFactory())
    assert nobody.get("/api/v1/logs/search", {"q": "fatal"}).json()["results"] == []
    assert Client().get("/api/v1/logs/search", {"q": "fatal"}).status_code in (401, 403)


def test_a_read_token_sees_only_its_experiment(two_experiments, experiment, other_experiment):
    mine, _ = two_experiments
    _, raw = make_token(experiment, scopes=("read",), name="reader")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    results = client.get("/api/v1/logs/search", {"q": "fatal"}).json()["results"]
    assert [h["attempt"] for h in results] == [str(mine.uid)]
    named = client.get("/api/v1/logs/search", {"q": "fatal", "experiment": "mu2e"}).json()
    assert named["results"] == []
    _, ingest_only = make_token(experiment, scopes=("ingest",), name="wn")
    r = Client(HTTP_AUTHORIZATION=f"Bearer {ingest_only}").get("/api/v1/logs/search", {"q": "x"})
    assert r.status_code == 403


def test_the_api_filters_and_validates(two_experiments, experiment):
    client = _login(experiment)
    assert client.get("/api/v1/logs/search", {"q": "fatal", "exit_code": 1}).json()["results"] == []
    assert (
        len(client.get("/api/v1/logs/search", {"q": "fatal", "exit_code": 65}).json()["results"])
        == 1
    )
    assert (
        client.get("/api/v1/logs/search", {"q": "fatal", "campaign": "x"}).json()["results"] == []
    )
    r = client.get("/api/v1/logs/search", {"q": "fatal", "since": "yesterday"})
    assert r.status_code == 400
    assert "since" in r.json()["fields"]
    assert client.get("/api/v1/logs/search").status_code == 400


def test_the_page_highlights_matches_after_escaping(experiment):
    _attempt_with_log(
        experiment, 'payload <img src=x onerror="alert(1)"> and <script>bad()</script>\n'
    )
    html = _login(experiment).get("/logs/search", {"q": '"img src"'}).content.decode()
    assert "&lt;<mark>img src</mark>=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert "<img src=x" not in html
    assert "<script>bad" not in html


def test_the_page_links_each_hit_to_its_line_and_pages_results(experiment):
    attempt = _attempt_with_log(experiment, "".join(f"tick {i}\n" for i in range(60)))
    client = _login(experiment)
    html = client.get("/logs/search", {"q": "tick"}).content.decode()
    assert html.count(f"/attempts/{attempt.uid}/log?line=") >= 50
    assert "offset=50" in html
    html = client.get("/logs/search", {"q": "tick", "offset": 50}).content.decode()
    assert "offset=0" in html
    assert "Lines 51–60" in html


def test_the_page_offers_only_the_user_s_experiments(experiment, other_experiment):
    html = _login(experiment).get("/logs/search").content.decode()
    assert '<option value="dune">' in html
    assert "mu2e" not in html


def test_it_filters_hits_by_error_class(experiment):
    from triage import services as triage_services
    from triage.models import AttemptClassification

    art = _attempt_with_log(experiment, "marker: Fatal Root Error\n", campaign="c1", exit_code=65)
    killed = _attempt_with_log(experiment, "marker: std::bad_alloc\n", campaign="c2", exit_code=134)
    for attempt in (art, killed):
        Attempt.objects.filter(pk=attempt.pk).update(ended_at=attempt.started_at)
        triage_services.attempt_classify(attempt_id=attempt.pk)
    klass = AttemptClassification.objects.get(attempt=art).error_class
    assert AttemptClassification.objects.get(attempt=killed).error_class != klass
    client = _login(experiment)
    r = client.get("/api/v1/logs/search", {"q": "marker", "error_class": str(klass.pk)})
    assert [h["attempt"] for h in r.json()["results"]] == [str(art.uid)]
    r = client.get("/api/v1/logs/search", {"q": "marker", "error_class": klass.key})
    assert [h["attempt"] for h in r.json()["results"]] == [str(art.uid)]
    assert len(client.get("/api/v1/logs/search", {"q": "marker"}).json()["results"]) == 2
    page = client.get("/logs/search", {"q": "marker", "error_class": str(klass.pk)})
    assert str(art.uid) in page.content.decode()
    assert str(killed.uid) not in page.content.decode()
