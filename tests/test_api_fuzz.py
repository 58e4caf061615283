"""Property-based requests against every operation of /api/openapi.json and /api/v1/openapi.json
(schemathesis): no 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from config.wsgi import application

schema = schemathesis.openapi.from_wsgi("/api/openapi.json", application)


@pytest.fixture
def as_member(key, dataset):
    """A key of the workspace's owner, and a dataset of theirs so that not every path is a 404.

    Requests go through the WSGI app in this thread, inside the test's transaction: like Django's
    test client, keep the end of a request from closing that connection.
    """
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield key
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@pytest.mark.django_db
def test_no_request_the_schema_allows_makes_a_server_error(case, as_member):
    response = case.call(headers=as_member)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:500]}"
    )


schema_v1 = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", application)


@pytest.fixture
def trained_tracker(as_member, embedded, workspace, owner, django_capture_on_commit_callbacks):
    """A tracker with a live model version, so that generated predictions reach the model."""
    from tests.test_game import cancel_tracker
    from tests.test_versions import play

    tracker = cancel_tracker(workspace, owner, embedded)
    play(tracker, owner, django_capture_on_commit_callbacks)
    return tracker


@schema_v1.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@pytest.mark.django_db
def test_no_request_the_v1_schema_allows_makes_a_server_error(case, as_member, trained_tracker):
    if case.path_parameters and "code" in case.path_parameters:
        case.path_parameters["code"] = str(trained_tracker.code)  # generated bodies reach a real model
    response = case.call(headers=as_member)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:500]}"
    )
