"""What the install's parts say now: queue depths from the broker, and whether the database and
Redis answer. Read by the metrics scrape and the console, never on a request's own path."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings

log = logging.getLogger(__name__)

QUEUES = ("interactive", "bulk", "webhooks")


def queue_depths() -> dict[str, int | None]:
    """Messages waiting in each queue (None: the broker did not answer)."""
    from celery import current_app

    depths: dict[str, int | None] = dict.fromkeys(QUEUES)
    try:
        with current_app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            channel = conn.default_channel
            for queue in QUEUES:
                try:
                    _, depth, _ = channel.queue_declare(queue=queue, passive=True)
                except Exception:  # a queue nobody declared yet holds nothing
                    depth = 0
                depths[queue] = int(depth)
    except Exception as exc:
        log.warning("queue depths unknown: the broker does not answer (%s)", exc)
    return depths


def _timed(check: Any) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        detail = check()
    except Exception as exc:
        return {"ok": False, "detail": f"{type(exc).__name__}: {exc}", "ms": _ms(start)}
    return {"ok": True, "detail": detail, "ms": _ms(start)}


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)


def _database() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return f"{connection.vendor}"


def _redis() -> str:
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
        info = client.info("memory")
        return f"used memory {info.get('used_memory_human', '?')}"
    finally:
        client.close()


def checks() -> dict[str, dict[str, Any]]:
    """Whether the database and Redis answer, and how fast."""
    return {"database": _timed(_database), "redis": _timed(_redis)}


WORKER_BEAT_S = 15  # how often a worker says it is alive
WORKER_LATE_S = 60  # a worker silent for longer is shown as not answering
WORKER_KEEP_S = 86400  # how long a silent worker is remembered


def _redis_client() -> Any:
    import redis

    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def _workers_prefix() -> str:
    import os

    return os.environ.get("TRACKERS_BROKER_KEY_PREFIX", "") + "workers:"


def worker_beat(hostname: str, queues: list[str], pid: int, started: float) -> None:
    """A worker says it is alive (``config.celery`` calls it every ``WORKER_BEAT_S``)."""
    import json

    client = _redis_client()
    try:
        client.set(
            _workers_prefix() + hostname,
            json.dumps(
                {"hostname": hostname, "queues": queues, "pid": pid, "started": started, "at": time.time()}
            ),
            ex=WORKER_KEEP_S,
        )
    finally:
        client.close()


def workers() -> list[dict[str, Any]] | None:
    """Every worker heard from in the last day, with its last heartbeat (None: Redis does not answer)."""
    import json

    try:
        client = _redis_client()
        try:
            keys = list(client.scan_iter(match=_workers_prefix() + "*", count=200))
            values = client.mget(keys) if keys else []
        finally:
            client.close()
    except Exception as exc:
        log.warning("workers unknown: Redis does not answer (%s)", exc)
        return None
    now = time.time()
    found = []
    for value in values:
        if value:
            w = json.loads(value)
            w["ago_s"] = max(0.0, now - float(w["at"]))
            w["alive"] = w["ago_s"] <= WORKER_LATE_S
            found.append(w)
    return sorted(found, key=lambda w: w["hostname"])
