"""Settings for the test suite: the embedded default plus fast hashing.

DATABASE_URL selects PostgreSQL (as .ci/run does). Tasks run eagerly unless
CELERY_BROKER_URL is set, in which case tests marked for it use a real worker.
"""

from .embedded import *  # noqa: F403
from .embedded import env

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
PRODMON_REQUIRE_SERVICES = env.bool("PRODMON_REQUIRE_SERVICES", default=False)
# Eager in the unit tests regardless of the broker; the worker tests flip it.
CELERY_TASK_ALWAYS_EAGER = True
# No background sweeper thread in the tests; tests/progress/test_embedded_sweep.py starts one.
PRODMON_EMBEDDED_SWEEP_SECONDS = 0
# The error summary's cache would hide data a test has just written; one test turns it on.
TRIAGE_SUMMARY_CACHE_SECONDS = 0
PRODMON_PAGE_CACHE_SECONDS = 0
# Node-health tests add attempts and judge again at once: no cached baselines
# (tests/health/test_baseline_cache.py turns it on).
TRIAGE_BASELINE_CACHE_SECONDS = 0
