"""A recording backend for tests of the action layer that need no batch system.
The real backends have their own tests in tests/submission/."""

import itertools
from collections.abc import Sequence

from prodmon.submission.base import (
    BatchRef,
    BatchStatus,
    JobSpec,
    SubmissionError,
    SubmitResult,
)


class FakeBackend:
    name = "fake"
    submitted: list[JobSpec] = []
    cancelled: list[str] = []
    held: list[str] = []
    released: list[str] = []
    statuses: dict[str, BatchStatus] = {}
    events_by_id: dict[str, list] = {}
    fail_with: str = ""
    _ids = itertools.count(1000)

    @classmethod
    def reset(cls) -> None:
        cls.submitted = []
        cls.cancelled = []
        cls.held = []
        cls.released = []
        cls.statuses = {}
        cls.events_by_id = {}
        cls.fail_with = ""

    def submit(self, spec: JobSpec) -> SubmitResult:
        if self.fail_with:
            raise SubmissionError(self.fail_with, command="fake-submit", output="refused")
        batch_id = str(next(self._ids))
        type(self).submitted.append(spec)
        return SubmitResult(batch_id=batch_id, command=f"fake-submit {spec.name}", output=batch_id)

    def cancel(self, ref: BatchRef) -> str:
        type(self).cancelled.append(ref.batch_id)
        return "cancelled"

    def hold(self, ref: BatchRef) -> str:
        type(self).held.append(ref.batch_id)
        return "held"

    def release(self, ref: BatchRef) -> str:
        type(self).released.append(ref.batch_id)
        return "released"

    def status(self, refs: Sequence[BatchRef]) -> dict[str, BatchStatus]:
        return {r.batch_id: self.statuses[r.batch_id] for r in refs if r.batch_id in self.statuses}

    def events(self, ref: BatchRef) -> list:
        return list(self.events_by_id.get(ref.batch_id, []))
