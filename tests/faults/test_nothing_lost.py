"""Nothing acknowledged is lost under 2x overload, kill -9 of a web worker,
kill -9 of a Celery worker and a PostgreSQL restart (bench/faults.py, quick
scale). PostgreSQL pass only: the server under test is a separate gunicorn
process that must see the test database; Redis is the broker."""

import os

import pytest
from django.db import connection

from bench import faults
from tests.conftest import service_missing

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("require_postgres")]


@pytest.fixture
def database_url():
    if not os.environ.get("CELERY_BROKER_URL"):
        service_missing("needs a broker: set CELERY_BROKER_URL=redis://…")
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


# restart-db kills every connection of the test session too (the live
# server's included), so .ci/run runs it as its own step after the suite:
#   python -m bench.faults --quick --scenario restart-db
@pytest.mark.parametrize("scenario", [s for s in faults.SCENARIOS if s != "restart-db"])
def test_every_event_is_stored_exactly_once(scenario, database_url, capsys):
    try:
        code = faults.main(["--quick", "--scenario", scenario, "--database-url", database_url])
    finally:
        # A restart kills this process's own connection too.
        connection.close()
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith(f"scenario={scenario}"))
    assert code == 0, line
    assert line.endswith("-> OK")
