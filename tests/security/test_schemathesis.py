"""Schemathesis against the served OpenAPI spec: at least 1,000 generated
cases across every operation, with a fixed seed; no response is a 5xx."""

import math

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given, seed, settings

from tests.factories import CampaignFactory, StageFactory

TOTAL_CASES = 1000
SEED = 20261127


@pytest.mark.django_db
def test_no_generated_request_gets_a_server_error(experiment, ingest_token):
    # Real names exist so that valid identities reach the services, not just 404s.
    StageFactory(campaign=CampaignFactory(experiment=experiment, name="mc"), name="gen")
    app = get_wsgi_application()
    # Called through the real WSGI handler, Django would close the test's
    # database connection after each request; the test client unhooks that
    # signal too, because the test's transaction must survive.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        _run_cases(app, ingest_token[1])
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def _run_cases(app, raw_token):
    schema = schemathesis.openapi.from_wsgi("/api/v1/schema/?format=json", app)
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) >= 5
    per_op = math.ceil(TOTAL_CASES / len(operations))
    headers = {"Authorization": f"Bearer {raw_token}"}
    ran, failures = 0, []

    for operation in operations:

        @seed(SEED)
        @settings(
            max_examples=per_op,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def run(case):
            nonlocal ran
            ran += 1
            response = case.call(headers=headers)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{response.text[:200]}"
                )

        run()
    print(f"schemathesis: {ran} cases over {len(operations)} operations, seed {SEED}")
    assert ran >= TOTAL_CASES * 0.9  # hypothesis may stop early on tiny input spaces
    assert not failures, "\n".join(failures[:20])
