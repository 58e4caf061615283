"""What a live tracker does in production, for its page: texts and matches per day, the match rate
before and after each promotion, live scores against the training pool's, drift, and the live
decisions someone said were wrong."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.db.models import Sum
from django.utils import timezone

from labeling import charts
from labeling import services as learning
from labeling.ml.estimates import ConceptEvidence
from serving import traffic
from serving.live import drift
from serving.models import Feedback, LiveFeedback, LiveText, ModelVersion, TrafficMinute
from serving.versions import services as versions
from trackers.models import Tracker, TrackerKind

DAYS = 30
AROUND_PROMOTION = timedelta(days=7)  # the match rate is compared over this long either side
LIVE_SCORES_MAX = 5000  # the most recent kept texts of the live version that drift compares


def _rate(tracker: Tracker, start: datetime, end: datetime) -> dict[str, Any]:
    got = TrafficMinute.objects.filter(tracker=tracker, start__gte=start, start__lt=end).aggregate(
        p=Sum("predictions"), m=Sum("matches")
    )
    predictions, matched = got["p"] or 0, got["m"] or 0
    return {
        "predictions": predictions,
        "matches": matched,
        "rate": matched / predictions if predictions else None,
    }


def promotions(tracker: Tracker, now: datetime) -> list[dict[str, Any]]:
    """Each version that went live in the last ``DAYS`` days, with the match rate over the week
    before and after (until the next promotion)."""
    since = now - timedelta(days=DAYS)
    went: list[tuple[int, datetime]] = [
        (number, at)
        for number, at in ModelVersion.objects.filter(tracker=tracker, went_live_at__gte=since)
        .order_by("went_live_at")
        .values_list("number", "went_live_at")
        if at is not None
    ]
    out = []
    for i, (number, at) in enumerate(went):
        until = min(at + AROUND_PROMOTION, went[i + 1][1] if i + 1 < len(went) else now)
        out.append(
            {
                "version": number,
                "at": at,
                "before": _rate(tracker, at - AROUND_PROMOTION, at),
                "after": _rate(tracker, at, until),
            }
        )
    return list(reversed(out))


def reference_scores(version: ModelVersion) -> np.ndarray | None:
    """The training pool's scores by ``version``'s model: the texts of the pool nobody answered."""
    evidence = learning.evidence_for(version.training_run)
    return evidence.unanswered_scores if isinstance(evidence, ConceptEvidence) else None


def live_scores(version: ModelVersion) -> np.ndarray:
    rows = LiveText.objects.filter(version=version).order_by("-created_at").values_list("score", flat=True)
    return np.asarray(list(rows[:LIVE_SCORES_MAX]), dtype=np.float64)


def drift_of(version: ModelVersion) -> drift.Drift | None:
    """Live traffic against the training pool for ``version`` (None: a topic tracker, or no pool)."""
    reference = reference_scores(version)
    if reference is None or not len(reference):
        return None
    return drift.compare(reference, live_scores(version))


def paired_chart(result: drift.Drift) -> dict[str, Any]:
    """Per decile of the pool's scores: the pool's share (a tenth) beside live traffic's."""
    return charts.paired_bars(
        [
            (
                f"{lo:.2f}",
                p,
                q,
                f"scores {lo:.2f}–{hi:.2f}: {p:.0%} of the training pool, {q:.0%} of live traffic",
            )
            for (lo, hi), p, q in zip(result.ranges, result.pool_shares, result.live_shares, strict=True)
        ]
    )


def overview(tracker: Tracker, now: datetime | None = None) -> dict[str, Any]:
    """Everything the In production panel shows, besides what is kept."""
    now = now or timezone.now()
    start = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=DAYS - 1
    )
    cells = traffic.series([tracker.pk], start=start, step=timedelta(days=1), steps=DAYS)[tracker.pk]
    predictions = sum(c["predictions"] for c in cells)
    matched = sum(c["matches"] for c in cells)
    went = promotions(tracker, now)
    days = [timezone.localtime(c["start"]).date() for c in cells]
    marks = {
        days.index(d): f"v{p['version']}" for p in went if (d := timezone.localtime(p["at"]).date()) in days
    }
    per_day = charts.stacked_bars(
        [
            (
                timezone.localtime(c["start"]).strftime("%d %b"),
                [c["matches"], c["predictions"] - c["matches"]],
                f"{timezone.localtime(c['start']):%d %b}: {c['predictions']:,} scored, {c['matches']:,} matched"
                + (f"; version {marks[i][1:]} went live" if i in marks else ""),
            )
            for i, c in enumerate(cells)
        ],
        classes=["bar-match", "bar-rest"],
        ticks_every=7,
        marks=marks,
    )
    version = versions.live_version(tracker)
    found = drift_of(version) if version is not None and tracker.kind != TrackerKind.TOPIC else None
    wrong = LiveFeedback.objects.filter(tracker=tracker, verdict=Feedback.WRONG, matched=True).select_related(
        "given_by"
    )
    return {
        "predictions": predictions,
        "matches": matched,
        "match_rate": matched / predictions if predictions else None,
        "per_day": per_day,
        "promotions": went,
        "version": version,
        "drift": found,
        "drift_chart": paired_chart(found) if found is not None and found.texts else None,
        "psi_threshold": drift.PSI_THRESHOLD,
        "min_texts": drift.MIN_TEXTS,
        "wrong": list(wrong[:10]),
        "wrong_count": wrong.count(),
        "feedback_count": LiveFeedback.objects.filter(tracker=tracker).count(),
    }
