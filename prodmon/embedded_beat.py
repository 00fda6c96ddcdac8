"""Celery beat's schedule, run in-process in the embedded mode.

With a broker, `celery beat` sends every entry of CELERY_BEAT_SCHEDULE to the
workers: the liveness sweep (lost and hung attempts), the resumption of bulk
actions left behind by a dead process, the log-index reconciler, retention,
the progress checks, the estimates refresher and the rest. The embedded mode
has no broker and no beat, so without this none of them would ever run.

`beat_tick()` runs every entry that is due, inline (tasks are eager there).
The embedded sweeper thread (prodmon.progress.runner) calls it on its timer,
holding the machine-wide sweep lock, so one tick runs at a time; the time each
entry last ran is kept in `<VAR_DIR>/embedded-beat.json`, shared by every
process of the machine.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

from celery import current_app
from celery.schedules import crontab
from django.conf import settings
from django.utils import timezone

logger = logging.getLogger(__name__)

STATE_NAME = "embedded-beat.json"


def state_path() -> Path:
    return Path(getattr(settings, "VAR_DIR", ".")) / STATE_NAME


def _load(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save(path: Path, state: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, sort_keys=True))
    tmp.replace(path)


def _seconds(schedule) -> float | None:
    if isinstance(schedule, int | float):
        return float(schedule)
    if isinstance(schedule, dt.timedelta):
        return schedule.total_seconds()
    run_every = getattr(schedule, "run_every", None)  # celery.schedules.schedule
    return run_every.total_seconds() if isinstance(run_every, dt.timedelta) else None


def _due(schedule, last: dt.datetime | None, now: dt.datetime) -> bool:
    every = _seconds(schedule)
    if every is not None:
        return last is None or (now - last).total_seconds() >= every
    if isinstance(schedule, crontab):
        # Never run yet: wait for the next time the crontab names (a weekly
        # report is not sent because a process happened to start).
        return last is not None and schedule.is_due(last).is_due
    return False


def beat_tick(
    *, now: dt.datetime | None = None, path: Path | None = None, skip_tasks: tuple[str, ...] = ()
) -> list[str]:
    """Run every schedule entry that is due (but those of `skip_tasks`, which
    the caller runs itself); returns their names, in order.

    An entry's time is recorded before it runs, so one that fails is not
    retried at once (beat behaves the same); its error is logged and the
    other entries still run."""
    now = now or timezone.now()
    path = path or state_path()
    state = _load(path)
    # Import every app's tasks module (what a worker does when it starts).
    current_app.loader.import_default_modules()
    ran = []
    for name, entry in getattr(settings, "CELERY_BEAT_SCHEDULE", {}).items():
        if entry["task"] in skip_tasks:
            continue
        raw = state.get(name)
        try:
            last = dt.datetime.fromisoformat(raw) if raw else None
        except ValueError:
            last = None
        if last is None and isinstance(entry["schedule"], crontab):
            state[name] = now.isoformat()  # start counting from now
            continue
        if not _due(entry["schedule"], last, now):
            continue
        state[name] = now.isoformat()
        _save(path, state)
        task = current_app.tasks.get(entry["task"])
        if task is None:
            logger.error("embedded beat: no task %r (entry %s)", entry["task"], name)
            continue
        try:
            task.apply(args=entry.get("args", ()), kwargs=entry.get("kwargs", {}), throw=True)
        except Exception:  # noqa: BLE001 - one entry's trouble must not stop the others
            logger.exception("embedded beat: %s (%s) failed", name, entry["task"])
        ran.append(name)
    _save(path, state)
    return ran
