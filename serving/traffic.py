"""Traffic per tracker and minute: texts scored, matches, and a histogram of prediction latency, for
the console's charts.

Counting stays off a request's critical time: ``record`` adds to a dictionary of this process, and a
background thread of the process moves what it holds every ``TRAFFIC_FLUSH_SECONDS`` into Redis, as
atomic increments of one hash per tracker and minute (every process adds to the same hash). Once a
minute has closed, ``store`` (a beat task) moves its hashes into the database (``TrafficMinute``),
rolls minutes older than ``ROLLUP_AFTER`` into hours and drops what is older than ``KEEP_DAYS``.

Latency is kept as counts per bucket of a geometric scale (each bucket 25% wider than the one
below, from a quarter of a millisecond), so percentiles of any period are read from merged counts.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from serving.models import TrafficMinute

log = logging.getLogger(__name__)

LATENCY_BASE_MS = 0.25
LATENCY_STEP = 1.25
LATENCY_BUCKETS = 60  # up to 0.25 ms × 1.25^59 ≈ 130 s; slower lands in the last
ROLLUP_AFTER = timedelta(days=2)
KEEP_DAYS = 35
KEY_TTL_S = 3 * 86400


def bucket_of(seconds: float) -> int:
    ms = seconds * 1000
    if ms <= LATENCY_BASE_MS:
        return 0
    return min(LATENCY_BUCKETS - 1, int(math.log(ms / LATENCY_BASE_MS) / math.log(LATENCY_STEP)) + 1)


def bucket_upper_ms(k: int) -> float:
    """The top of bucket ``k`` (its values are above the top of ``k - 1``)."""
    return LATENCY_BASE_MS * LATENCY_STEP**k


@dataclass
class _Tally:
    predictions: int = 0
    matches: int = 0
    latency: Counter[int] = field(default_factory=Counter)


class _Pending:
    """What this process has counted and not yet moved to Redis."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tallies: dict[tuple[int, int], _Tally] = {}
        self.pid = os.getpid()
        self.thread: threading.Thread | None = None


_pending = _Pending()
_said_at = -60.0


def _minute(at: float) -> int:
    return int(at // 60)


def record(tracker_id: int, texts: int, matched: int, seconds: float | None) -> None:
    """Count ``texts`` scored (``matched`` of them matches) by a tracker, answered in ``seconds``
    (None: not a request, e.g. bulk scoring)."""
    pending = _pending
    if pending.pid != os.getpid():  # a forked child: its parent's counts are its parent's to send
        _reset_after_fork()
        pending = _pending
    key = (tracker_id, _minute(time.time()))
    with pending.lock:
        tally = pending.tallies.get(key)
        if tally is None:
            tally = pending.tallies[key] = _Tally()
        tally.predictions += texts
        tally.matches += matched
        if seconds is not None:
            tally.latency[bucket_of(seconds)] += 1
    if pending.thread is None and settings.TRAFFIC_FLUSH_SECONDS > 0:
        _start_flusher()


def _reset_after_fork() -> None:
    global _pending
    _pending = _Pending()


def _start_flusher() -> None:
    pending = _pending
    with pending.lock:
        if pending.thread is not None:
            return
        pending.thread = threading.Thread(target=_flush_forever, name="traffic-flusher", daemon=True)
    pending.thread.start()


def _flush_forever() -> None:
    while True:
        time.sleep(settings.TRAFFIC_FLUSH_SECONDS)
        flush()


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5)


def _prefix() -> str:
    return os.environ.get("TRACKERS_BROKER_KEY_PREFIX", "") + "traffic:"


def flush() -> int:
    """Move this process's counts into Redis (kept to try again if Redis does not answer); returns
    how many tracker-minutes were sent."""
    pending = _pending
    with pending.lock:
        tallies, pending.tallies = pending.tallies, {}
    if not tallies:
        return 0
    prefix = _prefix()
    try:
        client = _client()
        pipe = client.pipeline(transaction=False)
        for (tracker_id, minute), tally in tallies.items():
            name = f"{prefix}{tracker_id}:{minute}"
            pipe.hincrby(name, "p", tally.predictions)
            if tally.matches:
                pipe.hincrby(name, "m", tally.matches)
            for k, n in tally.latency.items():
                pipe.hincrby(name, f"b{k}", n)
            pipe.expire(name, KEY_TTL_S)
            pipe.sadd(f"{prefix}keys", name)
        pipe.execute()
        client.close()
    except redis.RedisError as exc:
        with pending.lock:  # keep them: the next flush tries again
            for key, tally in tallies.items():
                mine = pending.tallies.setdefault(key, _Tally())
                mine.predictions += tally.predictions
                mine.matches += tally.matches
                mine.latency.update(tally.latency)
        _unreachable(exc)
        return 0
    return len(tallies)


def _unreachable(exc: Exception) -> None:
    global _said_at
    now = time.monotonic()
    if now - _said_at >= 60:
        _said_at = now
        log.warning("traffic counts wait in this process: Redis does not answer (%s)", exc)


atexit.register(flush)


def store(now: float | None = None) -> int:
    """Move the closed minutes' counts from Redis into the database, roll old minutes into hours and
    drop the oldest; returns how many tracker-minutes were stored."""
    now = time.time() if now is None else now
    closed_before = _minute(now)  # the current minute may still be counted into
    prefix = _prefix()
    client = _client()
    stored = 0
    try:
        for raw in client.smembers(f"{prefix}keys"):
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            tracker_id, minute = (int(part) for part in key[len(prefix) :].split(":"))
            if minute >= closed_before:
                continue
            pipe = client.pipeline(transaction=True)  # read and remove at once: counted once
            pipe.hgetall(key)
            pipe.delete(key)
            pipe.srem(f"{prefix}keys", key)
            values = pipe.execute()[0]
            if values:
                _add_row(tracker_id, minute, {k.decode(): int(v) for k, v in values.items()})
                stored += 1
    finally:
        client.close()
    _roll_up(timezone.now())
    return stored


def _add_row(tracker_id: int, minute: int, values: dict[str, int]) -> None:
    start = datetime.fromtimestamp(minute * 60, tz=UTC)
    latency = {k[1:]: n for k, n in values.items() if k.startswith("b")}
    with transaction.atomic():
        row = (
            TrafficMinute.objects.select_for_update()
            .filter(tracker_id=tracker_id, start=start, span_minutes=1)
            .first()
        )
        if row is None:
            if not _tracker_exists(tracker_id):
                return  # counted for a tracker deleted since
            TrafficMinute.objects.create(
                tracker_id=tracker_id,
                start=start,
                span_minutes=1,
                predictions=values.get("p", 0),
                matches=values.get("m", 0),
                latency=latency,
            )
            return
        row.predictions += values.get("p", 0)
        row.matches += values.get("m", 0)
        row.latency = _merged([row.latency, latency])
        row.save(update_fields=["predictions", "matches", "latency"])


def _tracker_exists(tracker_id: int) -> bool:
    from trackers.models import Tracker

    return Tracker.objects.filter(pk=tracker_id).exists()


def _merged(histograms: list[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for h in histograms:
        total.update({str(k): int(v) for k, v in h.items()})
    return dict(total)


def _roll_up(now: datetime) -> None:
    """Minutes older than ``ROLLUP_AFTER`` become one row per tracker and hour; rows older than
    ``KEEP_DAYS`` go."""
    TrafficMinute.objects.filter(start__lt=now - timedelta(days=KEEP_DAYS)).delete()
    old = TrafficMinute.objects.filter(span_minutes=1, start__lt=now - ROLLUP_AFTER).order_by(
        "tracker_id", "start"
    )
    hours: dict[tuple[int, datetime], list[TrafficMinute]] = {}
    for row in old.iterator(chunk_size=2000):
        hour = row.start.replace(minute=0, second=0, microsecond=0)
        hours.setdefault((row.tracker_id, hour), []).append(row)
    for (tracker_id, hour), rows in hours.items():
        with transaction.atomic():
            existing = (
                TrafficMinute.objects.select_for_update()
                .filter(tracker_id=tracker_id, start=hour, span_minutes=60)
                .first()
            )
            group = rows + ([existing] if existing else [])
            merged = {
                "predictions": sum(r.predictions for r in group),
                "matches": sum(r.matches for r in group),
                "latency": _merged([r.latency for r in group]),
            }
            if existing:
                TrafficMinute.objects.filter(pk=existing.pk).update(**merged)
            else:
                TrafficMinute.objects.create(tracker_id=tracker_id, start=hour, span_minutes=60, **merged)
            TrafficMinute.objects.filter(pk__in=[r.pk for r in rows]).delete()


def percentile(histogram: dict[str, int], q: float) -> float | None:
    """The ``q`` quantile (0..1) in milliseconds of a latency histogram, read at the top of the bucket
    it falls in (so never under-stated by more than a bucket's 25%); None without counts."""
    counts = sorted((int(k), int(n)) for k, n in histogram.items() if int(n) > 0)
    total = sum(n for _, n in counts)
    if not total:
        return None
    rank = q * total
    seen = 0
    for k, n in counts:
        seen += n
        if seen >= rank:
            return bucket_upper_ms(k)
    return bucket_upper_ms(counts[-1][0])


def series(
    tracker_ids: list[int], *, start: datetime, step: timedelta, steps: int
) -> dict[int, list[dict[str, Any]]]:
    """Per tracker, ``steps`` periods of ``step`` from ``start``: predictions, matches, match rate,
    p50 and p99 latency (ms)."""
    rows = TrafficMinute.objects.filter(
        tracker_id__in=tracker_ids, start__gte=start, start__lt=start + step * steps
    )
    grid: dict[int, list[list[Any]]] = {t: [[0, 0, []] for _ in range(steps)] for t in tracker_ids}
    for tracker_id, at, predictions, matched, latency in rows.values_list(
        "tracker_id", "start", "predictions", "matches", "latency"
    ):
        i = int((at - start) / step)
        if 0 <= i < steps:
            cell = grid[tracker_id][i]
            cell[0] += predictions
            cell[1] += matched
            cell[2].append(latency)
    out: dict[int, list[dict[str, Any]]] = {}
    for tracker_id, cells in grid.items():
        out[tracker_id] = []
        for i, (predictions, matched, latencies) in enumerate(cells):
            merged = _merged(latencies)
            out[tracker_id].append(
                {
                    "start": start + step * i,
                    "predictions": predictions,
                    "matches": matched,
                    "match_rate": matched / predictions if predictions else None,
                    "p50_ms": percentile(merged, 0.5),
                    "p99_ms": percentile(merged, 0.99),
                    "latency": merged,
                }
            )
    return out
