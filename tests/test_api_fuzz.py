"""Property-based requests against every operation of /api/openapi.json and /api/v1/openapi.json
(schemathesis): no 5xx. Every path parameter names a real object of its kind (tests/api_world.py),
so generated requests reach the code behind the lookups instead of their 404."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from config.wsgi import application
from tests import api_world

schema = schemathesis.openapi.from_wsgi("/api/openapi.json", application)
schema_v1 = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", application)


@pytest.fixture
def as_owner(key, world, settings):
    """A key of the workspace's owner.

    Requests go through the WSGI app in this thread, inside the test's transaction: like Django's
    test client, keep the end of a request from closing that connection.
    """
    from django.core import signals
    from django.db import close_old_connections

    settings.API_RATE = settings.API_V1_RATE = settings.API_SEARCH_RATE = "100000/m"
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield key
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


def _call(case, world, headers):
    if case.path_parameters:
        case.path_parameters = {**case.path_parameters, **api_world.fill(case.path, world)}
    response = case.call(headers=headers)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:500]}"
    )
    kind = response.headers["content-type"]
    kind = kind[0] if isinstance(kind, list) else kind  # every answer under /api/ is JSON (or a download)
    assert kind.startswith(("application/json", "text/csv", "application/x-ndjson")), (
        f"{case.method} {case.formatted_path}: {response.status_code} {kind} {response.text[:300]}"
    )


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@pytest.mark.django_db
def test_no_request_the_schema_allows_makes_a_server_error(case, as_owner, world):
    _call(case, world, as_owner)


@schema_v1.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@pytest.mark.django_db
def test_no_request_the_v1_schema_allows_makes_a_server_error(case, as_owner, world):
    _call(case, world, as_owner)
