"""`manage.py demo`: a campaign whose jobs really ran through the reporter."""

import io
import socket
from collections import Counter

import pytest
from django.core.management import CommandError, call_command

from prodmon.demo.loader import DEMO_CAMPAIGN, DEMO_EXPERIMENT, demo_setup
from prodmon.demo.plan import BLACK_HOLE, FAILURES, job_plan, stage_sizes
from prodmon.models import Attempt, Campaign, Experiment, Job, OutputFile


def test_it_plans_a_mix_of_outcomes_over_three_stages():
    plans = job_plan(jobs=30, seed=2026)

    assert stage_sizes(30) == {"gen": 12, "reco": 10, "ana": 8}
    assert len(plans) == 30
    retried = [p for p in plans if len(p.attempts) == 2]
    assert [[a.scenario for a in p.attempts] for p in retried] == [["file_open_error", "success"]]
    failing = [p.attempts[0].scenario for p in plans if p.attempts[-1].scenario != "success"]
    assert sorted(failing) == sorted(FAILURES)
    crashes = [p.attempts[0] for p in plans if p.attempts[0].scenario in ("segfault", "sigbus")]
    assert {(a.site, a.host) for a in crashes} == {BLACK_HOLE}
    assert job_plan(jobs=30, seed=2026) == plans  # deterministic


@pytest.mark.django_db(transaction=True)
def test_it_loads_a_campaign_of_jobs_that_really_ran(live_server):
    out = io.StringIO()
    # One at a time: the live test server shares one in-memory SQLite connection.
    call_command(
        "demo",
        "--url",
        live_server.url,
        *("--jobs", "4", "--parallel", "1", "--pace", "0.2"),
        stdout=out,
    )

    campaign = Campaign.objects.get(experiment__name=DEMO_EXPERIMENT, name=DEMO_CAMPAIGN)
    assert campaign.title == "Demo MC production"
    stages = {s.name: s for s in campaign.stages.all()}
    assert list(stages) == ["gen", "reco", "ana"]
    assert [s.name for s in stages["reco"].depends_on.all()] == ["gen"]
    assert [s.name for s in stages["ana"].depends_on.all()] == ["reco"]
    assert stages["reco"].config.command.startswith("lar -c reco_dune10kt.fcl")

    jobs = Job.objects.filter(stage__campaign=campaign)
    assert Counter(jobs.values_list("state", flat=True)) == {"succeeded": 3, "failed": 1}
    retried = jobs.get(attempt_count=2)
    first, second = retried.attempts.order_by("number")
    assert (first.status, first.exit_code) == (Attempt.Status.FAILED, 84)
    assert second.status == Attempt.Status.SUCCEEDED
    assert retried.good_attempt == second
    failed = jobs.get(state=Job.State.FAILED).attempts.get()
    assert failed.exit_code == 65

    attempts = Attempt.objects.filter(job__stage__campaign=campaign)
    assert attempts.count() == 5
    for attempt in attempts:
        assert attempt.is_ended
        assert attempt.node.site
        assert attempt.log_bytes > 0
        assert attempt.log_chunks.exists()
    assert OutputFile.objects.filter(attempt__status=Attempt.Status.SUCCEEDED).count() == 3
    text = out.getvalue()
    assert "job 4/4" in text
    assert "the server recorded 3 attempts succeeded, 2 failed" in text


@pytest.mark.django_db
def test_it_does_nothing_when_the_demo_is_loaded():
    campaign, _ = demo_setup(jobs=4)
    out = io.StringIO()

    call_command("demo", "--url", "http://127.0.0.1:9", stdout=out)

    assert "already loaded" in out.getvalue()
    assert Campaign.objects.get() == campaign
    assert not Job.objects.exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.django_db
def test_it_refuses_when_no_server_answers():
    with pytest.raises(CommandError, match="no prodmon server answers"):
        call_command("demo", "--url", f"http://127.0.0.1:{_free_port()}", stdout=io.StringIO())
    assert not Experiment.objects.exists()
