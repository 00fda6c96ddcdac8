"""From the production model to a JobSpec: the attempt's working directory, the
experiment's submission token, the stage's command and environment."""

import fcntl
import os
import re
from pathlib import Path

from logserver import services as log_services
from logserver.models import IngestToken, token_digest
from prodmon.models import Attempt, ConfigSnapshot, Experiment
from prodmon.submission.base import (
    JobSpec,
    SubmissionError,
    backend_name_for,
    node_exclusion_list,
    reporter_environment,
)
from prodmon.submission.config import setting, submission_dir

TOKEN_NAME = "submission"


def attempt_workdir(uid) -> Path:
    uid = str(uid)
    return submission_dir() / "attempts" / uid[:2] / uid


def backend_name_for_attempt(attempt: Attempt) -> str:
    stage = attempt.job.stage
    return backend_name_for(
        stage_backend=stage.submission_backend,
        experiment_backend=stage.campaign.experiment.submission_backend,
    )


def _token_valid(raw: str, experiment: Experiment) -> bool:
    return IngestToken.objects.filter(
        token_hash=token_digest(raw), experiment=experiment, revoked_at__isnull=True
    ).exists()


def submission_token_file(*, experiment: Experiment) -> Path:
    """The file holding the ingest token this experiment's jobs report with.

    Minted on first use (an ingest-only token named "submission", made through
    logserver's token service, so it is audited and revocable like any other),
    kept readable by this account only, and minted again after a revocation.
    """
    directory = submission_dir() / "tokens"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{experiment.name}.token"
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            raw = path.read_text().strip()
            if raw and _token_valid(raw, experiment):
                return path
        _, raw = log_services.token_create(
            experiment=experiment, name=TOKEN_NAME, scopes=["ingest"]
        )
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(raw + "\n")
        os.replace(tmp, path)
    return path


def _job_name(campaign: str, stage: str, key: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"pm.{campaign}.{stage}.{key}")
    return name[:120]


def job_spec_build(*, attempt: Attempt) -> JobSpec:
    """Everything a backend needs to run this (queued) attempt."""
    job = attempt.job
    stage = job.stage
    campaign = stage.campaign
    experiment = campaign.experiment
    config = ConfigSnapshot.objects.filter(stage=stage).first()
    if config is None or not config.command.strip():
        raise SubmissionError(f"stage {stage} has no command: take a config snapshot first")
    token_file = submission_token_file(experiment=experiment)
    environment = {str(k): str(v) for k, v in (config.environment or {}).items()}
    environment.update(
        reporter_environment(
            url=str(setting("PRODMON_SUBMISSION_URL")).rstrip("/"),
            token_file=token_file,
            campaign=campaign.name,
            stage=stage.name,
            job=job.key,
            attempt=str(attempt.uid),
            cores=stage.request_cores,
            outputs=[str(o) for o in job.expected_outputs or []],
        )
    )
    return JobSpec(
        attempt_uid=str(attempt.uid),
        name=_job_name(campaign.name, stage.name, job.key),
        command=config.command,
        environment=environment,
        workdir=attempt_workdir(attempt.uid),
        token_file=token_file,
        cores=stage.request_cores,
        memory_mb=attempt.request_memory_mb or stage.request_memory_mb,
        walltime_s=attempt.request_walltime_s or stage.request_walltime_s,
        exclude_nodes=tuple(node_exclusion_list()),
    )
