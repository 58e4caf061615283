"""Keeping what a live tracker saw: per tracker, off by default, every text or a sample of at most
``per_day`` a day, for ``LIVE_RETENTION_DAYS``.

Prediction and bulk scoring announce every text they scored (``serving.matches.scored``); this
module keeps them by the tracker's ``LiveKeeping``. A sample keeps each text with a probability set
once a day per process from the tracker's traffic of the day before (per_day / that volume), never
more than ``per_day`` a day, and records that probability with the text, so that a review round
drawn from kept texts can weigh each answer by it. With no traffic yet, texts are kept until the
day's count is reached (their probability then is 1).
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from serving.models import KeepMode, LiveKeeping, LiveText, ModelVersion, TrafficMinute
from trackers import audit, errors
from trackers.models import AuditAction, Tracker

_rates: dict[tuple[int, date], float] = {}
_rates_lock = threading.Lock()
_random = random.Random()


def policy_of(tracker_id: int, cache: Any = None) -> LiveKeeping | None:
    """The tracker's keeping, or None when it keeps nothing (kept under the request's snapshot)."""

    def find() -> LiveKeeping | None:
        found = LiveKeeping.objects.filter(tracker_id=tracker_id).exclude(mode=KeepMode.OFF).first()
        return found

    return cache.get(("live-keeping", tracker_id), find) if cache is not None else find()


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min), timezone.get_current_timezone())


def _rate(tracker_id: int, per_day: int, today: date) -> float:
    """The chance of keeping a text today: per_day / yesterday's texts (1 with no traffic yet)."""
    key = (tracker_id, today)
    with _rates_lock:
        found = _rates.get(key)
    if found is not None:
        return found
    start = _day_start(today - timedelta(days=1))
    seen = (
        TrafficMinute.objects.filter(
            tracker_id=tracker_id, start__gte=start, start__lt=start + timedelta(days=1)
        )
        .aggregate(n=Sum("predictions"))
        .get("n")
        or 0
    )
    rate = min(1.0, per_day / seen) if seen else 1.0
    with _rates_lock:
        _rates[key] = rate
    return rate


def keep_scored(
    sender: type,
    *,
    version: ModelVersion,
    texts: Callable[[], list[str]],
    scores: list[float],
    labels: list[str],
    matched: list[bool],
    source: str,
    cache: Any = None,
    **kwargs: Any,
) -> int:
    """Keep the texts a live version scored, as the tracker's keeping says; returns how many."""
    keeping = policy_of(version.tracker_id, cache)
    if keeping is None or not scores:
        return 0
    now = timezone.now()
    chosen = list(range(len(scores)))
    probability = 1.0
    if keeping.mode == KeepMode.SAMPLE:
        today = timezone.localdate(now)
        probability = _rate(version.tracker_id, keeping.per_day, today)
        chosen = [i for i in chosen if _random.random() < probability]
        if not chosen:
            return 0
        kept_today = LiveText.objects.filter(
            tracker_id=version.tracker_id, created_at__gte=_day_start(today)
        ).count()
        chosen = chosen[: max(0, keeping.per_day - kept_today)]
    said = texts()
    rows = [
        LiveText(
            tracker_id=version.tracker_id,
            version=version,
            text=said[i],
            text_hash=hashlib.sha256(said[i].encode()).hexdigest(),
            score=float(scores[i]),
            label=labels[i],
            matched=bool(matched[i]),
            source=source,
            probability=probability,
            created_at=now,
        )
        for i in chosen
    ]
    LiveText.objects.bulk_create(rows)
    return len(rows)


def set_keeping(tracker: Tracker, *, mode: str, per_day: int, by: Any) -> LiveKeeping:
    """The owner (or an admin) chooses what the tracker keeps of its live texts."""
    if mode not in KeepMode.values:
        raise errors.Invalid(f"one of {', '.join(KeepMode.values)} (got {mode!r})", field="mode")
    if not 1 <= per_day <= 1_000_000:
        raise errors.Invalid("a sample keeps between 1 and 1,000,000 texts a day", field="per_day")
    keeping, _ = LiveKeeping.objects.get_or_create(tracker=tracker)
    before = (keeping.mode, keeping.per_day)
    keeping.mode, keeping.per_day, keeping.changed_by, keeping.changed_at = mode, per_day, by, timezone.now()
    keeping.save()
    if before != (mode, per_day):
        audit.record(
            AuditAction.TRACKER_CHANGED,
            workspace=tracker.workspace,
            target=tracker.name,
            code=tracker.code,
            detail={"changed": {"live keeping": [list(before), [mode, per_day]]}},
            user=by,
        )
    return keeping


def sweep_expired(now: datetime | None = None) -> int:
    """Delete kept texts older than ``LIVE_RETENTION_DAYS``; returns how many."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.LIVE_RETENTION_DAYS)
    deleted, _ = LiveText.objects.filter(created_at__lt=cutoff).delete()
    return int(deleted)


def kept_summary(tracker: Tracker) -> dict[str, Any]:
    """What the tracker keeps, for its page."""
    keeping = LiveKeeping.objects.filter(tracker=tracker).first()
    kept = LiveText.objects.filter(tracker=tracker)
    return {
        "mode": keeping.mode if keeping else KeepMode.OFF,
        "per_day": keeping.per_day if keeping else 1000,
        "kept": kept.count(),
        "oldest": kept.order_by("created_at").values_list("created_at", flat=True).first(),
        "days": settings.LIVE_RETENTION_DAYS,
    }
