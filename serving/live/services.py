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
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from labeling.models import Card
from serving.models import KeepMode, LiveKeeping, LiveText, ModelVersion, TrafficMinute
from serving.versions.services import encoder_id_of
from trackers import audit, errors
from trackers.models import AuditAction, Dataset, Document, DocumentKind, JobKind, Segment, Tracker
from trackers.services import create_job, vector_store

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
    vectors: Callable[[], np.ndarray] | None = None,
    encoder_id: str = "",
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
    held = np.ascontiguousarray(vectors(), dtype=np.float32) if vectors is not None and encoder_id else None
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
            vector=held[i].tobytes() if held is not None else None,
            encoder_id=encoder_id if held is not None else "",
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
    """Delete kept texts older than ``LIVE_RETENTION_DAYS``, and their documents in the "live
    traffic" datasets unless someone answered or was asked about them (answers are kept: they
    train the tracker); returns how many texts."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.LIVE_RETENTION_DAYS)
    expired = LiveText.objects.filter(created_at__lt=cutoff)
    segments = list(expired.exclude(segment=None).values_list("segment_id", flat=True))
    with transaction.atomic():
        deleted, _ = LiveText.objects.filter(pk__in=list(expired.values_list("pk", flat=True))).delete()
        for i in range(0, len(segments), 5000):
            Document.objects.filter(
                segments__in=Segment.objects.filter(pk__in=segments[i : i + 5000])
                .exclude(annotations__isnull=False)
                .exclude(pk__in=_carded(segments[i : i + 5000]))
            ).delete()
    return deleted


def _carded(segment_ids: list[int]) -> set[int]:
    return set(Card.objects.filter(segment_id__in=segment_ids).values_list("segment_id", flat=True))


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


# --- the "live traffic" dataset ------------------------------------------------------------


def live_dataset(tracker: Tracker) -> Dataset:
    """The tracker's "live traffic" dataset, made (and joined to its pool) the first time."""
    found = tracker.datasets.filter(origin=Dataset.LIVE).first()
    if found is not None:
        return found
    with transaction.atomic():
        Tracker.objects.select_for_update().filter(pk=tracker.pk).first()
        found = tracker.datasets.filter(origin=Dataset.LIVE).first()
        if found is not None:
            return found
        name = f"live traffic · {tracker.name}"[:120]
        if Dataset.objects.filter(workspace_id=tracker.workspace_id, name=name).exists():
            name = f"live traffic · {tracker.code.hex[:8]}"
        dataset = Dataset.objects.create(
            workspace_id=tracker.workspace_id,
            name=name,
            description=f"What '{tracker.name}' scored in production and kept.",
            origin=Dataset.LIVE,
            encoder_id=encoder_id_of(tracker) or "",
        )
        tracker.datasets.add(dataset)
    return dataset


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - a segment's text key, as imports make it


@dataclass
class Joining:
    """A text to join a "live traffic" dataset, with the vector its prediction computed."""

    text: str
    vector: np.ndarray
    metadata: dict[str, Any]
    at: datetime
    external_id: str


def join(dataset: Dataset, items: list[Joining], encoder_id: str) -> list[Segment]:
    """Add ``items`` to ``dataset`` as one-line documents (identical texts share a vector row), then
    queue its search index. Call it in a transaction: it locks the dataset's row, as embedding does,
    so that one writer appends to its vectors at a time."""
    count = (
        Dataset.objects.select_for_update()
        .filter(pk=dataset.pk)
        .values_list("vector_count", flat=True)
        .first()
    )
    store = vector_store(dataset, rows=count or 0)
    if store.rows and store.manifest()["encoder_id"] != encoder_id:
        raise errors.Conflict(f"'{dataset.name}' holds vectors of another encoder than {encoder_id}")
    hashes = [sha1(item.text) for item in items]
    known = dict(
        Segment.objects.filter(
            dataset=dataset, text_hash__in=set(hashes), vector_row__isnull=False
        ).values_list("text_hash", "vector_row")
    )
    new: dict[str, int] = {}
    for i, h in enumerate(hashes):
        if h not in known and h not in new:
            new[h] = i
    first = store.append(np.vstack([items[i].vector for i in new.values()]), encoder_id) if new else 0
    at = {**known, **{h: first + k for k, h in enumerate(new)}}
    documents = Document.objects.bulk_create(
        [
            Document(
                dataset=dataset,
                external_id=item.external_id,
                title=" ".join(item.text.split())[:80],
                kind=DocumentKind.MESSAGE,
                metadata=item.metadata,
                occurred_at=item.at,
            )
            for item in items
        ]
    )
    segments = Segment.objects.bulk_create(
        [
            Segment(dataset=dataset, document=d, position=0, text=item.text, text_hash=h, vector_row=at[h])
            for item, d, h in zip(items, documents, hashes, strict=True)
        ]
    )
    Dataset.objects.filter(pk=dataset.pk).update(vector_count=store.rows, encoder_id=encoder_id)
    if new:
        transaction.on_commit(lambda: create_job(dataset=dataset, kind=JobKind.INDEX, params={"live": True}))
    return segments


def gather(tracker: Tracker, *, limit: int = 5000) -> int:
    """Move the tracker's kept texts that are not in its "live traffic" dataset yet into it, with
    the vectors their prediction computed (none is embedded again), and queue the dataset's search
    index. Returns how many texts joined."""
    if not LiveText.objects.filter(tracker=tracker, segment__isnull=True, vector__isnull=False).exists():
        return 0
    dataset = live_dataset(tracker)
    with transaction.atomic():
        rows = list(
            LiveText.objects.select_for_update(of=("self",))
            .filter(tracker=tracker, segment__isnull=True, vector__isnull=False)
            .select_related("version")
            .order_by("id")[:limit]
        )
        if not rows:
            return 0
        encoder_id = rows[0].encoder_id
        rows = [r for r in rows if r.encoder_id == encoder_id]
        items = [
            Joining(
                text=r.text,
                vector=np.frombuffer(bytes(r.vector or b""), dtype=np.float32),
                metadata={
                    "score": round(r.score, 6),
                    "matched": r.matched,
                    "version": r.version.number if r.version else None,
                    "source": r.source,
                },
                at=r.created_at,
                external_id=f"live-{r.pk}",
            )
            for r in rows
        ]
        try:
            segments = join(dataset, items, encoder_id)
        except errors.Conflict:  # the tracker's encoder changed: these vectors cannot join
            LiveText.objects.filter(pk__in=[r.pk for r in rows]).update(vector=None)
            return 0
        for r, segment in zip(rows, segments, strict=True):
            r.segment, r.vector = segment, None
        LiveText.objects.bulk_update(rows, ["segment", "vector"])
    return len(rows)


def gather_all() -> int:
    """Every keeping tracker's waiting texts into its "live traffic" dataset (a beat task)."""
    moved = 0
    ids = LiveText.objects.filter(segment__isnull=True, vector__isnull=False).values_list(
        "tracker_id", flat=True
    )
    for tracker in Tracker.objects.filter(pk__in=set(ids)):
        moved += gather(tracker)
    return moved
