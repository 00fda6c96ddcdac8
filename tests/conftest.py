import os
import shutil

import pytest
from django.conf import settings

from tests.factories import ExperimentFactory, make_token


def service_missing(reason: str):
    """Skip, or fail where CI demands every service (PRODMON_REQUIRE_SERVICES=1)."""
    if settings.PRODMON_REQUIRE_SERVICES:
        pytest.fail(f"required service missing: {reason}")
    pytest.skip(reason)


def uses_postgres() -> bool:
    return settings.DATABASES["default"]["ENGINE"].endswith("postgresql")


@pytest.fixture
def require_postgres():
    # Not a missing service: the SQLite pass legitimately skips these, and the
    # PostgreSQL pass of .ci/run runs them.
    if not uses_postgres():
        pytest.skip("PostgreSQL-only test: runs when DATABASE_URL=postgres://… (.ci/run does)")


@pytest.fixture
def experiment(db):
    return ExperimentFactory(name="dune")


@pytest.fixture
def other_experiment(db):
    return ExperimentFactory(name="mu2e")


@pytest.fixture
def ingest_token(experiment):
    """(token, raw) with ingest and read scopes for `experiment`."""
    return make_token(experiment, scopes=("ingest", "read"))


@pytest.fixture
def chromium_path():
    path = os.environ.get("PRODMON_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        service_missing("needs Debian's chromium (apt-get install chromium)")
    return path
