"""Settings of the progress app, with their defaults.

Each can be set in Django settings (and so from the environment, see
docs/progress.md); these defaults apply when a setting is absent.
"""

from django.conf import settings

DEFAULTS = {
    # Completion estimates (prodmon.progress.eta)
    "PRODMON_ETA_WINDOW_HOURS": 24,
    "PRODMON_ETA_MIN_ENDS": 5,
    "PRODMON_ETA_CACHE_SECONDS": 60,
    # The beat task recomputes active campaigns' estimates this often (keeps 3x).
    "PRODMON_ETA_REFRESH_SECONDS": 300,
    # A running attempt silent this long no longer counts as holding a slot.
    "PRODMON_ETA_LOST_AFTER_HOURS": 6,
    # Scout jobs (resource advice)
    "PRODMON_SCOUT_JOBS": 20,
    "PRODMON_SCOUT_MIN_JOBS": 5,
    "PRODMON_SCOUT_MARGIN": 1.2,
    # Exit codes that mean "killed for memory": 137 = 128 + SIGKILL from a shell
    # or container runtime, 50660/50661 = WMCore's RSS/VSIZE watchdog.
    "PRODMON_MEMORY_EXIT_CODES": [137, 50660, 50661],
    # A SIGKILL counts as a memory kill when the peak RSS reached this share of the request.
    "PRODMON_MEMORY_KILL_RSS_FRACTION": 0.9,
    # Run and subrun from file names, tried in order; each needs (?P<run>) and (?P<subrun>).
    "PRODMON_RUN_SUBRUN_PATTERNS": [
        r"(?i)(?:^|[^a-z])r(?:un)?[_-]?(?P<run>\d+)[_.-]+(?:s(?:ub)?(?:r(?:un)?)?[_-]?)?(?P<subrun>\d+)",
        r"(?:^|[._])(?P<run>\d{6})_(?P<subrun>\d{8})(?:[._]|$)",
    ],
    # Notifications
    "PRODMON_NOTIFY_MAX_PER_HOUR": 6,  # per subscription and kind; more are suppressed
    "PRODMON_NOTIFY_MAX_TRIES": 6,
    "PRODMON_NOTIFY_BACKOFF_SECONDS": 60,  # doubles after each failed try
    "PRODMON_WEBHOOK_TIMEOUT_SECONDS": 5,
    "PRODMON_SPIKE_WINDOW_MINUTES": 60,
    "PRODMON_SPIKE_BASELINE_HOURS": 24,
    "PRODMON_SPIKE_MIN_ATTEMPTS": 20,
    "PRODMON_SPIKE_MIN_INCREASE": 0.15,  # absolute rise of the failure rate
    "PRODMON_SPIKE_COOLDOWN_HOURS": 6,
    # Embedded mode (no broker): the in-process sweeper's period; 0 turns it off.
    "PRODMON_EMBEDDED_SWEEP_SECONDS": 60,
    # Reports
    "PRODMON_REPORT_ERROR_GROUPING": "auto",  # auto | exit_code | triage
    "PRODMON_PUBLIC_URL": "",  # prefix for links in e-mails, e.g. https://prodmon.example.org
}


def setting(name: str):
    return getattr(settings, name, DEFAULTS[name])
