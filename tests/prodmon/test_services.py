"""Services and selectors of the production model."""

import hashlib
import io
import tarfile
import uuid

import pytest
from django.test import Client
from django.utils import timezone

from prodmon import selectors, services
from prodmon.models import (
    AuditEntry,
    ConfigSnapshot,
    ImmutableError,
    Job,
    Role,
    StageProgressSample,
)
from tests.factories import (
    CampaignFactory,
    ExperimentFactory,
    JobFactory,
    MembershipFactory,
    StageFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def campaign(experiment):
    return CampaignFactory(experiment=experiment, name="mc")


def _stage_with_config(campaign):
    return services.stage_create(
        campaign=campaign,
        name="reco",
        command="lar -c reco.fcl -s $INPUT",
        release="v10_01_00",
        environment={"LARSOFT_VERSION": "v10_01_00", "QUAL": "e26:prof"},
        config_files={"reco.fcl": "services: {}\nphysics: { producers: {} }\n"},
    )


def test_it_takes_a_config_snapshot_with_file_and_whole_digests(campaign):
    stage = _stage_with_config(campaign)
    snap = stage.config
    content = "services: {}\nphysics: { producers: {} }\n"
    assert snap.files == [
        {
            "name": "reco.fcl",
            "content": content,
            "sha256": hashlib.sha256(content.encode()).hexdigest(),
        }
    ]
    assert snap.sha256 == snap.compute_sha256()
    assert len(snap.sha256) == 64


def test_it_refuses_to_change_a_config_snapshot(campaign):
    snap = _stage_with_config(campaign).config
    snap.command = "rm -rf /"
    with pytest.raises(ImmutableError):
        snap.save()
    assert ConfigSnapshot.objects.get(pk=snap.pk).command.startswith("lar -c reco.fcl")


def test_a_different_config_gives_a_different_digest(campaign):
    a = _stage_with_config(campaign).config
    b = services.stage_create(
        campaign=campaign, name="reco2", command="lar -c reco.fcl -s $INPUT", release="v10_02_00"
    ).config
    assert a.sha256 != b.sha256


def test_the_config_archive_reproduces_the_snapshot(campaign):
    snap = _stage_with_config(campaign).config
    blob = services.config_snapshot_archive(snapshot=snap)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        names = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers()}
    assert names["files/reco.fcl"] == snap.files[0]["content"].encode()
    assert b"lar -c reco.fcl -s $INPUT" in names["command.sh"]
    assert b"QUAL=e26:prof" in names["environment.env"]
    sums = dict(reversed(line.split("  ")) for line in names["SHA256SUMS"].decode().splitlines())
    for name, data in names.items():
        if name != "SHA256SUMS":
            assert sums[name] == hashlib.sha256(data).hexdigest()


def test_the_config_archive_is_served_only_to_members(campaign, experiment):
    stage = _stage_with_config(campaign)
    member = MembershipFactory(experiment=experiment, role=Role.VIEWER).user
    outsider = MembershipFactory(experiment=ExperimentFactory(name="other")).user
    client = Client()
    url = f"/stages/{stage.pk}/config.tar.gz"
    assert client.get(url).status_code == 302  # login first
    client.force_login(outsider)
    assert client.get(url).status_code == 404
    client.force_login(member)
    r = client.get(url)
    assert r.status_code == 200
    assert r["Content-Type"] == "application/gzip"
    assert stage.config.sha256[:12] in r["Content-Disposition"]


def test_a_stage_cannot_depend_on_a_stage_of_another_campaign(campaign):
    foreign = StageFactory(campaign=CampaignFactory(experiment=campaign.experiment))
    with pytest.raises(ValueError, match="not in campaign"):
        services.stage_create(campaign=campaign, name="ana", depends_on=[foreign])


def test_it_records_stage_dependencies(campaign):
    gen = services.stage_create(campaign=campaign, name="gen", order=1)
    reco = services.stage_create(campaign=campaign, name="reco", order=2, depends_on=[gen])
    assert list(reco.depends_on.all()) == [gen]
    assert list(gen.dependents.all()) == [reco]


def test_queued_attempts_are_numbered_in_order_and_queue_the_job(campaign):
    job = JobFactory(stage=StageFactory(campaign=campaign))
    first = services.attempt_queue(job=job)
    second = services.attempt_queue(job=job)
    job.refresh_from_db()
    assert (first.number, second.number) == (1, 2)
    assert job.state == Job.State.QUEUED
    assert job.attempt_count == 2
    assert first.uid != second.uid


def test_a_heartbeat_never_lowers_the_peak_rss(campaign, experiment):
    stage = StageFactory(campaign=campaign, name="gen")
    identity = services.AttemptIdentity(campaign="mc", stage="gen", job="j", attempt=uuid.uuid4())
    now = timezone.now()
    services.attempt_record_heartbeat(
        experiment=experiment,
        identity=identity,
        at=now,
        metrics=services.Metrics(peak_rss_bytes=900),
    )
    attempt = services.attempt_record_heartbeat(
        experiment=experiment,
        identity=identity,
        at=now + timezone.timedelta(seconds=60),
        metrics=services.Metrics(peak_rss_bytes=500, cpu_s=30, wall_s=60),
    )
    assert attempt.peak_rss_bytes == 900
    assert attempt.cpu_efficiency == pytest.approx(0.5)
    assert attempt.job.stage == stage


def test_a_late_heartbeat_does_not_overwrite_newer_metrics(campaign, experiment):
    StageFactory(campaign=campaign, name="gen")
    identity = services.AttemptIdentity(campaign="mc", stage="gen", job="j", attempt=uuid.uuid4())
    now = timezone.now()
    services.attempt_record_heartbeat(
        experiment=experiment, identity=identity, at=now, metrics=services.Metrics(cpu_s=50)
    )
    attempt = services.attempt_record_heartbeat(
        experiment=experiment,
        identity=identity,
        at=now - timezone.timedelta(minutes=5),
        metrics=services.Metrics(cpu_s=10),
    )
    assert attempt.cpu_s == 50
    assert attempt.last_heartbeat_at == now


def test_cpu_efficiency_divides_by_cores(campaign, experiment):
    StageFactory(campaign=campaign, name="gen")
    identity = services.AttemptIdentity(campaign="mc", stage="gen", job="j", attempt=uuid.uuid4())
    now = timezone.now()
    services.attempt_record_start(
        experiment=experiment, identity=identity, at=now, hostname="wn", cores=4
    )
    attempt, applied = services.attempt_record_end(
        experiment=experiment,
        identity=identity,
        at=now,
        exit_code=0,
        signal=None,
        metrics=services.Metrics(cpu_s=200, wall_s=100),
    )
    assert applied
    assert attempt.cpu_efficiency == pytest.approx(0.5)


def test_a_zero_exit_that_the_job_calls_a_failure_is_a_failure(campaign, experiment):
    StageFactory(campaign=campaign, name="gen")
    identity = services.AttemptIdentity(campaign="mc", stage="gen", job="j", attempt=uuid.uuid4())
    attempt, _ = services.attempt_record_end(
        experiment=experiment,
        identity=identity,
        at=timezone.now(),
        exit_code=0,
        signal=None,
        metrics=services.Metrics(),
        reported_success=False,
    )
    assert attempt.status == "failed"
    assert attempt.job.state == "failed"


def test_a_failed_attempt_leaves_the_job_running_while_another_attempt_runs(campaign, experiment):
    StageFactory(campaign=campaign, name="gen")
    now = timezone.now()
    running = services.AttemptIdentity(campaign="mc", stage="gen", job="j", attempt=uuid.uuid4())
    failing = services.AttemptIdentity(campaign="mc", stage="gen", job="j", attempt=uuid.uuid4())
    services.attempt_record_start(experiment=experiment, identity=running, at=now, hostname="a")
    attempt, _ = services.attempt_record_end(
        experiment=experiment,
        identity=failing,
        at=now,
        exit_code=1,
        signal=None,
        metrics=services.Metrics(),
    )
    attempt.job.refresh_from_db()
    assert attempt.job.state == "running"


def test_node_properties_merge_and_site_moves(experiment):
    now = timezone.now()
    services.node_upsert(hostname="wn1", site="FNAL", properties={"cvmfs": True}, at=now)
    node = services.node_upsert(
        hostname="wn1", site="FNAL-GPGrid", properties={"os": "AL9"}, at=now
    )
    node.refresh_from_db()
    assert node.site == "FNAL-GPGrid"
    assert node.properties == {"cvmfs": True, "os": "AL9"}


def test_progress_samples_are_rate_limited_unless_forced(campaign):
    stage = StageFactory(campaign=campaign)
    JobFactory(stage=stage, state=Job.State.SUCCEEDED)
    JobFactory(stage=stage, state=Job.State.FAILED)
    first = services.stage_progress_sample(stage_id=stage.pk)
    assert (first.succeeded, first.failed, first.pending) == (1, 1, 0)
    assert services.stage_progress_sample(stage_id=stage.pk) is None
    assert services.stage_progress_sample(stage_id=stage.pk, force=True) is not None
    assert StageProgressSample.objects.filter(stage=stage).count() == 2


def test_the_sweep_samples_only_active_campaigns(experiment):
    active = StageFactory(campaign=CampaignFactory(experiment=experiment, state="active"))
    StageFactory(campaign=CampaignFactory(experiment=experiment, state="archived"))
    assert services.stage_progress_sweep() == 1
    assert StageProgressSample.objects.get().stage == active


def test_campaign_progress_counts_jobs_against_expected(campaign):
    stage = StageFactory(campaign=campaign, expected_jobs=10, completion_pct=50)
    for state in ["succeeded"] * 5 + ["failed", "running"]:
        JobFactory(stage=stage, state=state)
    (progress,) = selectors.campaign_progress(campaigns=[campaign])[campaign.pk]
    assert progress.counts["succeeded"] == 5
    assert progress.pct_complete == pytest.approx(50.0)
    assert progress.is_complete
    bars = {state: (n, pct) for state, n, pct in progress.bars()}
    assert bars["failed"] == (1, pytest.approx(10.0))


def test_users_see_only_their_experiments(experiment, other_experiment):
    member = MembershipFactory(experiment=experiment).user
    admin = UserFactory(username="root", is_superuser=True)
    assert selectors.experiment_ids_for_user(user=member) == {experiment.pk}
    assert selectors.experiment_ids_for_user(user=admin) == {experiment.pk, other_experiment.pk}
    assert selectors.user_role(user=member, experiment_id=other_experiment.pk) is None
    assert selectors.user_role(user=admin, experiment_id=experiment.pk) == Role.ADMIN


def test_min_role_filters_experiments(experiment, other_experiment):
    user = UserFactory()
    MembershipFactory(user=user, experiment=experiment, role=Role.SHIFTER)
    MembershipFactory(user=user, experiment=other_experiment, role=Role.VIEWER)
    assert selectors.experiment_ids_for_user(user=user, min_role=Role.SHIFTER) == {experiment.pk}


def test_audit_records_who_did_what(experiment):
    user = UserFactory(username="alice")
    entry = services.audit_record(
        actor=user, action="stage.hold", experiment=experiment, target=experiment, params={"x": 1}
    )
    assert AuditEntry.objects.get() == entry
    assert (entry.actor_label, entry.target_type, entry.target_id) == (
        "alice",
        "experiment",
        str(experiment.pk),
    )
