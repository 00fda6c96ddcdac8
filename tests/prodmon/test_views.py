"""The portal pages: campaign list and detail, job table, job and attempt pages."""

import datetime as dt
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from logserver import services as log_services
from prodmon import services
from prodmon.models import Attempt, Job, OutputFile, Role
from prodmon.templatetags.prodmon_format import duration, filesize
from tests.factories import (
    AttemptFactory,
    CampaignFactory,
    JobFactory,
    MembershipFactory,
    NodeFactory,
    StageFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def member(experiment):
    return MembershipFactory(
        user=UserFactory(username="alice"), experiment=experiment, role=Role.SHIFTER
    ).user


@pytest.fixture
def outsider(other_experiment):
    return MembershipFactory(user=UserFactory(username="mallory"), experiment=other_experiment).user


@pytest.fixture
def campaign(experiment):
    return CampaignFactory(experiment=experiment, name="mc2025a", title="MC production 2025a")


@pytest.fixture
def gen(campaign):
    return StageFactory(campaign=campaign, name="gen", order=1, expected_jobs=10)


@pytest.fixture
def reco(campaign, gen):
    stage = StageFactory(campaign=campaign, name="reco", order=2, expected_jobs=10)
    stage.depends_on.set([gen])
    return stage


@pytest.fixture
def attempt(gen):
    job = JobFactory(stage=gen, key="gen_00042.root", state=Job.State.FAILED, attempt_count=1)
    return AttemptFactory(
        job=job,
        number=1,
        status=Attempt.Status.FAILED,
        exit_code=65,
        node=NodeFactory(hostname="wn042.fnal.gov", site="FNAL", properties={"os": "el9"}),
        ended_at=timezone.now(),
        wall_s=3720,
        cpu_s=3236.4,
        cpu_efficiency=0.87,
        peak_rss_bytes=int(1.5 * 1024**3),
    )


@pytest.fixture
def foreign_attempt(other_experiment):
    stage = StageFactory(campaign=CampaignFactory(experiment=other_experiment, name="secretcamp"))
    job = JobFactory(stage=stage, key="secret_job.root")
    return AttemptFactory(job=job, number=1)


def _jobs(stage, state, n):
    return [JobFactory(stage=stage, state=state) for _ in range(n)]


def _keys(response) -> set[str]:
    return {job.key for job in response.context["table"].page.object_list.data}


# --- access -----------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/",
        "/campaigns/1/",
        "/jobs/",
        "/jobs/1/",
        "/attempts/6a1c0a66-51a6-4a4e-9b33-57c5d9a1c001/",
    ],
)
def test_it_redirects_anonymous_users_to_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_it_serves_the_login_form(client):
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert b'name="username"' in response.content
    assert b'name="password"' in response.content


def test_it_logs_in_through_the_form_and_lands_on_campaigns(client, member):
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": "pw-for-tests"}, follow=True
    )
    assert response.redirect_chain[-1][0] == reverse("campaign-list")
    assert b"alice" in response.content


def test_it_offers_logout_as_a_post_form(client, member):
    client.force_login(member)
    html = client.get("/").content.decode()
    form = re.search(r'<form method="post" action="/accounts/logout/">(.*?)</form>', html, re.S)
    assert form is not None
    assert "csrfmiddlewaretoken" in form.group(1)
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_it_shows_a_member_their_campaign_job_and_attempt(client, member, attempt):
    client.force_login(member)
    job = attempt.job
    campaign = job.stage.campaign

    listing = client.get("/")
    assert listing.status_code == 200
    assert campaign.get_absolute_url() in listing.content.decode()

    assert client.get(campaign.get_absolute_url()).status_code == 200
    assert job.key in _keys(client.get("/jobs/"))

    job_page = client.get(job.get_absolute_url())
    assert job_page.status_code == 200
    assert attempt.get_absolute_url() in job_page.content.decode()

    attempt_page = client.get(attempt.get_absolute_url())
    assert attempt_page.status_code == 200
    assert "wn042.fnal.gov" in attempt_page.content.decode()


def test_it_404s_an_outsider_on_pages_of_other_experiments(client, outsider, attempt):
    client.force_login(outsider)
    job = attempt.job
    for url in (
        job.stage.campaign.get_absolute_url(),
        job.get_absolute_url(),
        attempt.get_absolute_url(),
    ):
        assert client.get(url).status_code == 404, url


def test_it_hides_other_experiments_from_lists(client, member, attempt, foreign_attempt):
    client.force_login(member)
    campaigns = client.get("/").content.decode()
    assert "mc2025a" in campaigns
    assert "secretcamp" not in campaigns

    jobs = client.get("/jobs/")
    assert _keys(jobs) == {"gen_00042.root"}
    html = jobs.content.decode()
    assert "secretcamp" not in html  # not even among the filter choices
    assert "mu2e" not in html


def test_it_shows_everything_to_a_superuser(client, attempt, foreign_attempt):
    client.force_login(UserFactory(username="root", is_superuser=True))
    assert _keys(client.get("/jobs/")) == {"gen_00042.root", "secret_job.root"}
    assert client.get(foreign_attempt.get_absolute_url()).status_code == 200


def test_it_shows_no_rows_for_a_stage_filter_outside_the_users_experiments(
    client, member, attempt, foreign_attempt
):
    client.force_login(member)
    response = client.get(f"/jobs/?stage={foreign_attempt.job.stage_id}")
    assert response.status_code == 200
    assert _keys(response) == set()
    assert "Some filters are invalid" in response.content.decode()


# --- campaign progress -----------------------------------------------------------


def test_it_shows_stage_progress_numbers(client, member, gen, reco):
    _jobs(gen, Job.State.SUCCEEDED, 3)
    _jobs(gen, Job.State.FAILED, 2)
    _jobs(gen, Job.State.RUNNING, 1)
    _jobs(gen, Job.State.QUEUED, 1)
    client.force_login(member)

    response = client.get("/")
    [(campaign, progress)] = response.context["rows"]
    gen_progress = progress[0]
    assert gen_progress.stage == gen
    assert gen_progress.bars() == [
        ("succeeded", 3, 30.0),
        ("failed", 2, 20.0),
        ("running", 1, 10.0),
        ("queued", 1, 10.0),
        ("pending", 0, 0.0),
    ]
    html = response.content.decode()
    assert "30.0%" in html  # gen percent complete
    assert "width: 30.000%" in html
    assert "width: 20.000%" in html
    assert f'href="/jobs/?stage={gen.pk}&amp;state=failed"' in html
    assert "3 / 10" in html
    assert "← gen" in html  # reco depends on gen


def test_it_counts_jobs_beyond_expected_against_the_total(client, member, gen):
    _jobs(gen, Job.State.SUCCEEDED, 12)  # more jobs than the 10 expected
    client.force_login(member)
    html = client.get(gen.campaign.get_absolute_url()).content.decode()
    assert "100.0%" in html
    assert "12 / 12" in html


def test_it_filters_campaigns_by_state(client, member, campaign, experiment):
    CampaignFactory(experiment=experiment, name="oldcamp", state="archived")
    client.force_login(member)
    names = {c.name for c, _ in client.get("/?state=archived").context["rows"]}
    assert names == {"oldcamp"}


def test_it_summarises_config_and_recent_failures_on_the_campaign_page(
    client, member, campaign, attempt
):
    services.stage_create(
        campaign=campaign,
        name="merge",
        expected_jobs=1,
        command="lar -c merge.fcl",
        release="v10_01_02",
        config_files={"merge.fcl": "services: {}"},
    )
    client.force_login(member)
    response = client.get(campaign.get_absolute_url())
    html = response.content.decode()
    [config] = [c for p, c in response.context["stages"] if p.stage.name == "merge"]
    assert "lar -c merge.fcl" in html
    assert "v10_01_02" in html
    assert config.sha256 in html
    assert "merge.fcl" in html
    assert response.context["failures"] == [attempt]
    assert attempt.get_absolute_url() in html
    assert "exit 65" in html


# --- job table ----------------------------------------------------------------------


@pytest.fixture
def table_data(gen, reco):
    fnal = NodeFactory(hostname="wn001.fnal.gov", site="FNAL")
    cern = NodeFactory(hostname="b7g17p1234.cern.ch", site="CERN")
    ok = JobFactory(stage=gen, key="gen_ok", state=Job.State.SUCCEEDED)
    AttemptFactory(job=ok, number=1, status="succeeded", exit_code=0, node=fnal)
    # Failed on CERN with 65, then retried on FNAL and failed with 137: the latest is FNAL/137.
    retried = JobFactory(stage=gen, key="gen_retried", state=Job.State.FAILED)
    AttemptFactory(job=retried, number=1, status="failed", exit_code=65, node=cern)
    AttemptFactory(job=retried, number=2, status="failed", exit_code=137, node=fnal)
    bad = JobFactory(stage=reco, key="reco_bad", state=Job.State.FAILED)
    AttemptFactory(job=bad, number=1, status="failed", exit_code=65, node=cern)
    JobFactory(stage=reco, key="reco_waiting", state=Job.State.PENDING)
    return {"gen": gen, "reco": reco}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("state=failed", {"gen_retried", "reco_bad"}),
        ("state=pending", {"reco_waiting"}),
        ("site=CERN", {"reco_bad"}),
        ("site=fnal", {"gen_ok", "gen_retried"}),
        ("node=b7g17", {"reco_bad"}),
        ("exit_code=65", {"reco_bad"}),
        ("exit_code=137", {"gen_retried"}),
        ("exit_code=0", {"gen_ok"}),
        ("key=retried", {"gen_retried"}),
        ("state=failed&site=FNAL", {"gen_retried"}),
    ],
)
def test_it_narrows_the_job_table_with_filters(client, member, table_data, query, expected):
    client.force_login(member)
    assert _keys(client.get(f"/jobs/?{query}")) == expected


def test_it_filters_the_job_table_by_stage_and_state_as_the_progress_links_do(
    client, member, table_data
):
    client.force_login(member)
    gen = table_data["gen"]
    assert _keys(client.get(f"/jobs/?stage={gen.pk}")) == {"gen_ok", "gen_retried"}
    assert _keys(client.get(f"/jobs/?stage={gen.pk}&state=failed")) == {"gen_retried"}
    campaign = gen.campaign
    assert len(_keys(client.get(f"/jobs/?campaign={campaign.pk}"))) == 4
    assert len(_keys(client.get(f"/jobs/?experiment={campaign.experiment_id}"))) == 4


def test_it_shows_the_latest_attempt_in_the_job_row(client, member, table_data):
    client.force_login(member)
    response = client.get("/jobs/?key=gen_retried")
    [row] = response.context["table"].page.object_list.data
    assert (row.last_exit_code, row.last_site, row.last_hostname) == (137, "FNAL", "wn001.fnal.gov")
    html = response.content.decode()
    assert "exit 137" in html
    assert 'class="badge st-failed">failed<' in html


def test_it_shows_a_signal_when_the_job_was_killed(client, member, gen):
    job = JobFactory(stage=gen, key="killed", state=Job.State.FAILED)
    AttemptFactory(job=job, number=1, status="failed", exit_code=None, signal=9)
    client.force_login(member)
    assert "SIGKILL (9)" in client.get("/jobs/").content.decode()


def test_it_sorts_the_job_table(client, member, table_data):
    client.force_login(member)
    rows = client.get("/jobs/?sort=key").context["table"].page.object_list.data
    assert [j.key for j in rows] == ["gen_ok", "gen_retried", "reco_bad", "reco_waiting"]
    # Only jobs with an exit code, so where NULLs sort (PostgreSQL vs SQLite) does not matter.
    rows = client.get("/jobs/?state=failed&sort=-last_exit").context["table"].page.object_list.data
    assert [j.key for j in rows] == ["gen_retried", "reco_bad"]  # 137, then 65


def test_it_paginates_the_job_table_by_50(client, member, gen):
    for i in range(55):
        JobFactory(stage=gen, key=f"job_{i:03d}")
    client.force_login(member)
    first = client.get("/jobs/?sort=key")
    assert len(first.context["table"].page.object_list) == 50
    assert "1–50 of 55" in first.content.decode()
    second = client.get("/jobs/?sort=key&page=2")
    assert _keys(second) == {f"job_{i:03d}" for i in range(50, 55)}


def test_it_keeps_the_job_table_query_count_flat(client, member, gen):
    def queries_for_page() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/jobs/").status_code == 200
        return len(ctx.captured_queries)

    client.force_login(member)
    for _ in range(3):
        AttemptFactory(job=JobFactory(stage=gen), number=1)
    few = queries_for_page()
    for _ in range(30):
        job = JobFactory(stage=gen)
        AttemptFactory(job=job, number=1)
        AttemptFactory(job=job, number=2)
    assert queries_for_page() == few


def test_it_keeps_the_campaign_list_query_count_flat(client, member, experiment):
    def queries_for_page() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/").status_code == 200
        return len(ctx.captured_queries)

    client.force_login(member)
    first = StageFactory(campaign=CampaignFactory(experiment=experiment))
    JobFactory(stage=first)
    few = queries_for_page()
    for _ in range(5):
        stages = [StageFactory(campaign=CampaignFactory(experiment=experiment)) for _ in range(2)]
        stages[1].depends_on.set([stages[0]])
        for stage in stages:
            JobFactory(stage=stage, state=Job.State.RUNNING)
    assert queries_for_page() == few


# --- job and attempt pages --------------------------------------------------------------


def test_it_lists_a_jobs_attempts_with_metrics(client, member, attempt):
    client.force_login(member)
    html = client.get(attempt.job.get_absolute_url()).content.decode()
    assert "wn042.fnal.gov" in html
    assert "1h 02m" in html  # 3720 s of wall time
    assert "87%" in html
    assert "1.5 GiB" in html
    assert "exit 65" in html


def test_it_shows_the_attempt_identity_node_metrics_and_outputs(client, member, attempt):
    job = attempt.job
    OutputFile.objects.create(
        attempt=attempt,
        job=job,
        stage=job.stage,
        campaign=job.stage.campaign,
        name="gen_00042_out.root",
        size=3 * 1024**3,
        checksum="adler32:0a1b2c3d",
    )
    client.force_login(member)
    html = client.get(attempt.get_absolute_url()).content.decode()
    for text in (
        "mc2025a",
        "gen_00042.root",
        "FNAL",
        "el9",  # a reported node property
        "1h 02m",
        "53m 56s",  # CPU time
        "87%",
        "1.5 GiB",
        "gen_00042_out.root",
        "3.0 GiB",
        "adler32:0a1b2c3d",
    ):
        assert text in html, text
    assert job.get_absolute_url() in html
    assert job.stage.campaign.get_absolute_url() in html


def test_it_flags_a_duplicate_completion(client, member, attempt):
    Attempt.objects.filter(pk=attempt.pk).update(
        status="succeeded", exit_code=0, is_duplicate_completion=True
    )
    client.force_login(member)
    assert "duplicate completion" in client.get(attempt.get_absolute_url()).content.decode()


def test_it_escapes_log_text(client, member, attempt):
    data = b"Begin processing\n<script>alert(1)</script>\n<b>bold</b> & done\n"
    log_services.log_chunk_store(attempt=attempt, offset=0, data=data)
    Attempt.objects.filter(pk=attempt.pk).update(log_bytes=len(data))
    client.force_login(member)
    html = client.get(attempt.get_absolute_url()).content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)</script>" not in html
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; done" in html


def test_it_marks_a_gap_in_the_log(client, member, attempt):
    log_services.log_chunk_store(attempt=attempt, offset=0, data=b"first line\n")
    log_services.log_chunk_store(attempt=attempt, offset=1245, data=b"after the gap\n")
    Attempt.objects.filter(pk=attempt.pk).update(log_bytes=1245 + 14)
    client.force_login(member)
    html = client.get(attempt.get_absolute_url()).content.decode()
    assert "first line" in html
    assert "[… 1,234 bytes missing …]" in html
    assert "after the gap" in html
    assert html.index("first line") < html.index("bytes missing") < html.index("after the gap")


def test_it_says_when_there_is_no_log(client, member, attempt):
    client.force_login(member)
    assert "No log received" in client.get(attempt.get_absolute_url()).content.decode()


def test_it_links_between_attempts_of_the_same_job(client, member, attempt):
    second = AttemptFactory(job=attempt.job, number=2, status="running")
    client.force_login(member)
    html = client.get(attempt.get_absolute_url()).content.decode()
    assert second.get_absolute_url() in html


# --- formatting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (42, "42s"),
        (725, "12m 05s"),
        (3720, "1h 02m"),
        (3 * 86400 + 4 * 3600, "3d 04h"),
    ],
)
def test_it_formats_durations(seconds, text):
    assert duration(seconds) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (None, "—"),
        (512, "512 B"),
        (1536, "1.5 KiB"),
        (int(1.2 * 1024**3), "1.2 GiB"),
        (150 * 1024**3, "150 GiB"),
    ],
)
def test_it_formats_sizes(size, text):
    assert filesize(size) == text


def test_it_shows_times_in_utc_with_age(client, member, attempt):
    started = dt.datetime(2025, 3, 1, 14, 3, 22, tzinfo=dt.UTC)
    Attempt.objects.filter(pk=attempt.pk).update(started_at=started)
    client.force_login(member)
    html = client.get(attempt.get_absolute_url()).content.decode()
    assert "2025-03-01 14:03 UTC" in html
    assert re.search(r"\d+d ago", html)
