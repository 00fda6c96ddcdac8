"""The production model, one module per concern:

- core: experiments, campaigns, stages, submissions, jobs, attempts, nodes,
  outputs, memberships, audit, progress samples;
- progress: expected inputs, reports and notification settings;
- actions: what the action layer (retries, launches) keeps.
"""

from prodmon.models.actions import *  # noqa: F403
from prodmon.models.core import (
    Attempt,
    AuditEntry,
    Campaign,
    ConfigSnapshot,
    Experiment,
    ImmutableError,
    Job,
    Membership,
    Node,
    OutputFile,
    Role,
    Stage,
    StageProgressSample,
    Submission,
)
from prodmon.models.progress import *  # noqa: F403

__all__ = [
    "Attempt",
    "AuditEntry",
    "Campaign",
    "ConfigSnapshot",
    "Experiment",
    "ImmutableError",
    "Job",
    "Membership",
    "Node",
    "OutputFile",
    "Role",
    "Stage",
    "StageProgressSample",
    "Submission",
]
