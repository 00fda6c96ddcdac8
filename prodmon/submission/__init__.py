"""The submission layer: one small interface (base.py), one module per batch
system (local.py, slurm.py, htcondor.py), chosen per stage or experiment.

The action layer (prodmon.actions) decides what to submit and records it; this
package only talks to batch systems. See docs/actions.md.
"""

from prodmon.submission.base import (
    Backend,
    BatchRef,
    BatchState,
    BatchStatus,
    JobSpec,
    SubmissionError,
    SubmitResult,
    backend_get,
    node_exclusion_list,
)

__all__ = [
    "Backend",
    "BatchRef",
    "BatchState",
    "BatchStatus",
    "JobSpec",
    "SubmissionError",
    "SubmitResult",
    "backend_get",
    "node_exclusion_list",
]
