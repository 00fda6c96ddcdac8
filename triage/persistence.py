"""drain3 state in the database, one template miner per experiment.

`DatabasePersistence` is a drain3 PersistenceHandler that reads and writes the
`TemplateMinerState` row. TemplateMiner saves after every change (a new
cluster or a changed template); a line that only joins a known cluster costs
no write.

Several processes may classify at once. Each keeps its miner in memory with
the version it loaded; `cluster_line` locks the state row, reloads when
another process saved a newer version, adds the line, and saves (bumping the
version) when the state changed, all before the lock is released. So the
database always holds the one true state, and a process that restarts - or
whose transaction rolled back - simply reloads it.
"""

from __future__ import annotations

import threading

from django.db import IntegrityError, transaction
from drain3.persistence_handler import PersistenceHandler

from triage.mining import ClusterResult, ErrorTemplateMiner
from triage.models import TemplateMinerState


class DatabasePersistence(PersistenceHandler):
    def __init__(self, experiment_id: int, *, version: int = 0, state: bytes | None = None):
        self.experiment_id = experiment_id
        self.version = version
        self._initial = state

    def load_state(self):
        if self._initial is not None:
            state, self._initial = self._initial, None
            return state
        row = (
            TemplateMinerState.objects.filter(experiment_id=self.experiment_id)
            .values_list("state", "version")
            .first()
        )
        if row is None or row[0] is None:
            return None
        self.version = row[1]
        return bytes(row[0])

    def save_state(self, state):
        self.version += 1
        updated = TemplateMinerState.objects.filter(experiment_id=self.experiment_id).update(
            state=state, version=self.version
        )
        if not updated:
            TemplateMinerState.objects.create(
                experiment_id=self.experiment_id, state=state, version=self.version
            )


_miners: dict[int, ErrorTemplateMiner] = {}
_guard = threading.Lock()


def miner_load(*, experiment_id: int) -> ErrorTemplateMiner:
    """A fresh miner with the experiment's stored state (as after a restart)."""
    return ErrorTemplateMiner(persistence_handler=DatabasePersistence(experiment_id))


def forget_cached_miners() -> None:
    """Drop the in-process miners, as a restart would."""
    with _guard:
        _miners.clear()


def _state_row_locked(experiment_id: int) -> TemplateMinerState:
    row = TemplateMinerState.objects.select_for_update().filter(experiment_id=experiment_id).first()
    if row is not None:
        return row
    try:
        with transaction.atomic():
            TemplateMinerState.objects.create(experiment_id=experiment_id)
    except IntegrityError:
        pass  # created concurrently
    return TemplateMinerState.objects.select_for_update().get(experiment_id=experiment_id)


def cluster_line(*, experiment_id: int, line: str) -> ClusterResult:
    """Add one error line to the experiment's miner; saves the state when it changed."""
    with _guard, transaction.atomic():
        row = _state_row_locked(experiment_id)
        miner = _miners.get(experiment_id)
        handler = miner.persistence_handler if miner is not None else None
        if miner is None or handler.version != row.version:
            state = bytes(row.state) if row.state is not None else None
            handler = DatabasePersistence(experiment_id, version=row.version, state=state)
            miner = ErrorTemplateMiner(persistence_handler=handler)
        _miners[experiment_id] = miner
        try:
            return miner.add_line(line)
        except Exception:
            _miners.pop(experiment_id, None)
            raise
