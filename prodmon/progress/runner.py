"""The progress sweep without cron in the embedded mode (no broker, no beat).

With a broker, Celery beat runs `progress.progress_sweep_task` every five
minutes and a failed delivery is re-enqueued with its backoff. In the
embedded mode tasks run in-process and nothing runs on a timer, so a failed
delivery would wait for `manage.py progress_sweep` from cron. Instead, the
first request a serving process handles starts one daemon thread
(`EmbeddedSweeper`) that calls `services.progress_sweep()` and the rest of
beat's schedule that is due (`prodmon.embedded_beat.beat_tick`) every
`PRODMON_EMBEDDED_SWEEP_SECONDS` (60; 0 turns it off):

- one sweep at a time on the machine: the thread takes a non-blocking
  `flock` on `<PRODMON_VAR_DIR>/progress-sweep.lock` (every gunicorn worker
  has a thread; whoever holds the lock sweeps, the others skip; a dead
  process releases it);
- at most one sweep per interval across the processes: the lock file holds
  the time of the last sweep, written before it runs (a sweep that crashes
  is not repeated at once);
- the thread's database connections are closed after every sweep.

The embedded mode is one machine by definition, so a file lock is the right
guard. The production settings never install the middleware (beat does it).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.db import close_old_connections, connections

from prodmon.progress.conf import setting

logger = logging.getLogger(__name__)

LOCK_NAME = "progress-sweep.lock"


def _default_sweep() -> None:
    from prodmon.embedded_beat import beat_tick
    from prodmon.progress import services

    # Notification retries on every tick; then whatever else of beat's
    # schedule is due (liveness, action resumption, reconciler, retention …).
    services.progress_sweep()
    beat_tick(skip_tasks=("progress.progress_sweep_task",))


def lock_path() -> Path:
    return Path(getattr(settings, "VAR_DIR", ".")) / LOCK_NAME


class EmbeddedSweeper:
    """Calls `sweep` every `interval` seconds on a daemon thread, at most once
    per interval and one at a time across the processes sharing `path`."""

    def __init__(
        self,
        *,
        interval: float,
        path: Path,
        sweep: Callable[[], None] = _default_sweep,
    ):
        if interval <= 0:
            raise ValueError("the sweep interval must be positive")
        self.interval = float(interval)
        self.path = Path(path)
        self.sweep = sweep
        self.sweeps = 0  # run by this instance
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pid = os.getpid()

    def run_once(self) -> bool:
        """Sweep now if no one else is sweeping and the last sweep, by any
        process, is at least an interval old. True when it swept."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # another thread or process is sweeping
            raw = os.pread(fd, 64, 0).decode(errors="replace").strip()
            try:
                last = float(raw) if raw else 0.0
            except ValueError:
                last = 0.0
            now = time.time()
            # A little slack: timers of different processes drift.
            if 0 <= now - last < self.interval * 0.9:
                return False
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{now:.3f}\n".encode(), 0)
            try:
                close_old_connections()
                self.sweep()
            finally:
                connections.close_all()  # this thread's connections only
            self.sweeps += 1
            return True
        finally:
            os.close(fd)  # releases the lock

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - the thread must outlive a bad sweep
                logger.exception("embedded progress sweep failed")

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name="prodmon-progress-sweep", daemon=True
        )
        self._thread.start()
        logger.info(
            "embedded progress sweep every %.0f s (lock %s, pid %s)",
            self.interval,
            self.path,
            self.pid,
        )

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


_sweeper: EmbeddedSweeper | None = None
_guard = threading.Lock()


def enabled() -> bool:
    return bool(getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False)) and (
        float(setting("PRODMON_EMBEDDED_SWEEP_SECONDS")) > 0
    )


def ensure_started() -> EmbeddedSweeper | None:
    """Start this process's sweeper once (again in a forked child, whose
    parent's thread did not survive the fork)."""
    global _sweeper
    current = _sweeper
    if current is not None and current.pid == os.getpid() and current.alive:
        return current
    if not enabled():
        return None
    with _guard:
        if _sweeper is None or _sweeper.pid != os.getpid() or not _sweeper.alive:
            _sweeper = EmbeddedSweeper(
                interval=float(setting("PRODMON_EMBEDDED_SWEEP_SECONDS")), path=lock_path()
            )
            _sweeper.start()
        return _sweeper


def stop() -> None:
    """Stop this process's sweeper (tests)."""
    global _sweeper
    with _guard:
        if _sweeper is not None:
            _sweeper.stop()
            _sweeper = None


class EmbeddedSweepMiddleware:
    """Starts the embedded sweeper on the first request a process serves.
    Not used (removed by Django) with a broker or with the interval at 0."""

    def __init__(self, get_response):
        if not enabled():
            raise MiddlewareNotUsed
        self.get_response = get_response

    def __call__(self, request):
        ensure_started()
        return self.get_response(request)
