"""The submission layer's shared parts: which backend, the reporter's identity
variables, the node exclusion hook, and the submission token."""

import re
from pathlib import Path

import pytest

from logserver import services as log_services
from logserver.models import IngestToken
from prodmon.submission import base
from prodmon.submission.base import (
    SubmissionError,
    backend_get,
    backend_name_for,
    node_exclusion_list,
    reporter_environment,
)
from prodmon.submission.local import LocalBackend
from prodmon.submission.spec import submission_token_file

REPORTER = Path(__file__).resolve().parents[2] / "logserver" / "prodmon_report.py"


def test_it_passes_exactly_the_variables_the_reporter_reads():
    env = reporter_environment(
        url="http://h",
        token_file="/t",
        campaign="c",
        stage="s",
        job="j",
        attempt="a",
        cores=4,
        outputs=["x.root", "y.root"],
    )
    documented = set(re.findall(r"\b(PRODMON_[A-Z_]+)\b", REPORTER.read_text()))
    assert set(env) <= documented
    assert env == {
        "PRODMON_URL": "http://h",
        "PRODMON_TOKEN_FILE": "/t",
        "PRODMON_CAMPAIGN": "c",
        "PRODMON_STAGE": "s",
        "PRODMON_JOB": "j",
        "PRODMON_ATTEMPT": "a",
        "PRODMON_CORES": "4",
        "PRODMON_OUTPUTS": "x.root,y.root",
    }


def test_it_chooses_the_stage_then_the_experiment_then_the_setting(settings):
    settings.PRODMON_SUBMISSION_BACKEND = "local"
    assert backend_name_for() == "local"
    assert backend_name_for(experiment_backend="htcondor") == "htcondor"
    assert backend_name_for(stage_backend="slurm", experiment_backend="htcondor") == "slurm"
    assert isinstance(backend_get("local"), LocalBackend)
    with pytest.raises(SubmissionError, match="unknown submission backend 'pbs'"):
        backend_get("pbs")


@pytest.mark.django_db
def test_it_excludes_nothing_while_triage_flags_no_node():
    assert node_exclusion_list() == []


@pytest.mark.django_db
def test_it_excludes_the_nodes_triage_flags_as_black_holes(experiment, other_experiment):
    """Real flags, set through triage's services by a shifter of each experiment."""
    from prodmon.models import Role
    from tests.actions.conftest import node_flag_black_hole
    from tests.factories import MembershipFactory, UserFactory

    for exp, host in [(experiment, "wn7.example.org"), (other_experiment, "wn3.example.org")]:
        shifter = MembershipFactory(
            user=UserFactory(username=f"shifter-{exp.name}"), experiment=exp, role=Role.SHIFTER
        ).user
        node_flag_black_hole(experiment=exp, hostname=host, actor=shifter)
    assert node_exclusion_list() == ["wn3.example.org", "wn7.example.org"]


def test_it_refuses_to_run_locally_on_an_excluded_host(tmp_path):
    import socket

    from prodmon.submission.base import JobSpec

    spec = JobSpec(
        attempt_uid="u",
        name="n",
        command="true",
        environment={},
        workdir=tmp_path,
        token_file=tmp_path / "t",
        exclude_nodes=(socket.gethostname(),),
    )
    with pytest.raises(SubmissionError, match="exclusion list"):
        LocalBackend().submit(spec)


@pytest.mark.django_db
def test_it_mints_a_submission_token_once_and_again_after_a_revocation(
    experiment, settings, tmp_path
):
    settings.PRODMON_SUBMISSION_DIR = tmp_path
    path = submission_token_file(experiment=experiment)
    assert path == tmp_path / "tokens" / "dune.token"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    raw = path.read_text().strip()
    assert submission_token_file(experiment=experiment).read_text().strip() == raw
    token = IngestToken.objects.get(experiment=experiment, name="submission")
    assert token.scopes == ["ingest"]

    log_services.token_revoke(token=token)
    again = submission_token_file(experiment=experiment).read_text().strip()
    assert again != raw
    assert IngestToken.objects.filter(name="submission", revoked_at__isnull=True).count() == 1


def test_it_knows_its_three_backends():
    assert set(base.BACKENDS) == {"local", "slurm", "htcondor"}
