"""Prometheus metrics (prometheus-client), served at ``/metrics``.

Each process counts into its own registry: with several processes (the web server's workers, the
Celery workers) ``PROMETHEUS_MULTIPROC_DIR`` names a folder where each writes its counts and the
scrape adds them up (``make run`` sets it). Counting is a memory write; nothing here makes a round
trip on the path of a request. Queue depths are read from the broker when scraped.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUEST_SECONDS = Histogram(
    "trackers_http_request_seconds",
    "Time to answer a request, by route (the URL pattern), method and status",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
PREDICTIONS = Counter(
    "trackers_predictions_total",
    "Texts scored, per tracker and path (predict, many, bulk)",
    ["tracker", "path"],
)
MATCHES = Counter("trackers_matches_total", "Texts that matched, per tracker and path", ["tracker", "path"])
JOB_SECONDS = Histogram(
    "trackers_job_seconds",
    "Background work from claim to outcome, by kind and outcome",
    ["kind", "outcome"],
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
)
WEBHOOK_ATTEMPTS = Counter(
    "trackers_webhook_attempts_total", "Webhook delivery attempts, by outcome", ["outcome"]
)


def request_answered(method: str, route: str, status: int, seconds: float) -> None:
    REQUEST_SECONDS.labels(route, method, str(status)).observe(seconds)


def counters_for(tracker: str, path: str) -> tuple[Any, Any]:
    """The (predictions, matches) counters of a tracker and path, to keep and increment."""
    return PREDICTIONS.labels(tracker, path), MATCHES.labels(tracker, path)


def job_done(kind: str, outcome: str, seconds: float) -> None:
    JOB_SECONDS.labels(kind, outcome).observe(seconds)


def webhook_attempt(outcome: str) -> None:
    WEBHOOK_ATTEMPTS.labels(outcome).inc()


class QueueDepth:
    """Messages waiting per Celery queue, read from the broker (Redis lists) at each scrape."""

    def collect(self) -> Any:
        from trackers import health

        family = GaugeMetricFamily("trackers_queue_depth", "Messages waiting in each queue", labels=["queue"])
        for queue, depth in health.queue_depths().items():
            if depth is not None:
                family.add_metric([queue], depth)
        yield family


def exposition() -> tuple[bytes, str]:
    """The text a scrape gets: this process's counts, or every process's in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    registry_with_queues = CollectorRegistry()
    registry_with_queues.register(QueueDepth())
    return generate_latest(registry) + generate_latest(registry_with_queues), CONTENT_TYPE_LATEST
