"""/metrics: Prometheus counts of requests, predictions, matches, jobs, webhooks and queues, for this
host or a token holder only."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.test_versions import predict

pytestmark = pytest.mark.django_db


def _value(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}{{{wanted}}} in the scrape")


def test_a_scrape_counts_requests_predictions_matches_and_queues(client, trained, key, broker):
    first = client.get("/metrics")
    assert first.status_code == 200 and first["Content-Type"].startswith("text/plain")
    before = (
        _value(
            first.content.decode(), "trackers_predictions_total", tracker=str(trained.code), path="predict"
        )
        if (f'tracker="{trained.code}"' in first.content.decode())
        else 0.0
    )
    body = predict(
        client, trained, key, texts=["please cancel my plan", "the weather is nice", "cancel it"]
    ).json()
    matched = sum(r["match"] for r in body["results"])
    text = client.get("/metrics").content.decode()
    assert _value(text, "trackers_predictions_total", tracker=str(trained.code), path="predict") == before + 3
    if matched:
        assert _value(text, "trackers_matches_total", tracker=str(trained.code), path="predict") >= matched
    assert (
        _value(
            text,
            "trackers_http_request_seconds_count",
            route="api/v1/trackers/<code>/predict",
            method="POST",
            status="200",
        )
        >= 1
    )
    assert _value(text, "trackers_queue_depth", queue="interactive") >= 0
    assert "trackers_job_seconds_count" in text  # training ran to produce the version


def test_metrics_are_for_this_host_or_a_token(client, settings):
    assert client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 403
    outside = Client(REMOTE_ADDR="203.0.113.9")
    assert outside.get("/metrics").status_code == 403
    settings.METRICS_TOKEN = "s3cret-token"
    assert outside.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert outside.get("/metrics", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
