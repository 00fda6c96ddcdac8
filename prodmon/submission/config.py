"""Settings of the submission layer and the action layer, with their defaults.

Each can be set in the settings module (from the environment variable of the
same name, see docs/actions.md); when a setting is absent the default here
applies, so the layer works in the embedded mode with nothing configured.
"""

import os
import sys
from pathlib import Path

from django.conf import settings


def _defaults() -> dict:
    var_dir = Path(getattr(settings, "VAR_DIR", Path.cwd() / "var"))
    base_dir = Path(getattr(settings, "BASE_DIR", Path.cwd()))
    return {
        # Backend when neither the stage nor its experiment names one.
        "PRODMON_SUBMISSION_BACKEND": "local",
        # The server address jobs report to (PRODMON_URL in the job).
        "PRODMON_SUBMISSION_URL": "http://127.0.0.1:8000",
        # Attempt working directories, local slots and minted tokens. For Slurm
        # and HTCondor it must be visible from the submit host; for Slurm also
        # from the worker nodes (a shared file system).
        "PRODMON_SUBMISSION_DIR": var_dir / "submission",
        # Interpreter and reporter path used by the local and Slurm backends.
        "PRODMON_SUBMISSION_PYTHON": sys.executable,
        "PRODMON_SUBMISSION_REPORTER": base_dir / "logserver" / "prodmon_report.py",
        # Most local jobs running at once on this machine.
        "PRODMON_LOCAL_MAX_JOBS": os.cpu_count() or 2,
        "PRODMON_SLURM_PARTITION": "",
        "PRODMON_SLURM_ACCOUNT": "",
        # The worker nodes' Python for the reporter, and the schedd (blank: local).
        "PRODMON_HTCONDOR_PYTHON": "/usr/bin/python3",
        "PRODMON_HTCONDOR_SCHEDD": "",
        # Seconds a launch or recovery waits before it submits (it can be cancelled).
        "PRODMON_LAUNCH_BACKOUT_SECONDS": 60,
        # "Retry with more memory / time" without a scout suggestion.
        "PRODMON_RETRY_MEMORY_FACTOR": 1.5,
        "PRODMON_RETRY_MEMORY_MAX_MB": 16000,
        "PRODMON_RETRY_WALLTIME_FACTOR": 1.5,
        "PRODMON_RETRY_WALLTIME_MAX_S": 48 * 3600,
        # A batch system's "ended" wins over a silent reporter only after this long.
        "PRODMON_BATCH_END_GRACE_SECONDS": 600,
        # A running action renews its lease this often (a third of it); one whose
        # lease ran out lost its process and is resumed (see docs/actions.md).
        "PRODMON_ACTIONS_LEASE_SECONDS": 120,
        # How bulk actions run: "thread" (in this process; the embedded default when
        # Celery tasks are eager) or "celery" (a worker; eager runs them inline).
        "PRODMON_ACTIONS_RUNNER": "thread"
        if getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False)
        else "celery",
    }


def setting(name: str):
    if hasattr(settings, name):
        return getattr(settings, name)
    return _defaults()[name]


def submission_dir() -> Path:
    return Path(setting("PRODMON_SUBMISSION_DIR"))
