"""What the game and the tracker page show: counts, points, streaks, quality before and after."""

from __future__ import annotations

from django.db.models import Count, Q

from labeling import game
from labeling.models import Annotation
from serving.models import TrainingRun, TrainingState
from serving.services import READY_LABELS, READY_PER_CLASS
from trackers.models import Tracker

POINTS_PER_ANSWER = 10


def label_counts(tracker: Tracker) -> dict:
    agg = Annotation.objects.filter(tracker=tracker).aggregate(
        yes=Count("id", filter=Q(answer="yes")),
        no=Count("id", filter=Q(answer="no")),
        skip=Count("id", filter=Q(answer=Annotation.SKIP)),
    )
    agg["answered"] = agg["yes"] + agg["no"]
    agg["until_ready"] = max(
        0, READY_LABELS - agg["answered"], READY_PER_CLASS - agg["yes"], READY_PER_CLASS - agg["no"]
    )
    return agg


def player_stats(tracker: Tracker, user) -> dict:
    recent = list(
        Annotation.objects.filter(tracker=tracker, annotator=user)
        .order_by("-updated_at", "-id")
        .values_list("answer", flat=True)[:200]
    )
    streak = 0
    for a in recent:
        if a == Annotation.SKIP:
            break
        streak += 1
    answered = (
        Annotation.objects.filter(tracker=tracker, annotator=user).exclude(answer=Annotation.SKIP).count()
    )
    return {"points": answered * POINTS_PER_ANSWER, "streak": streak}


def runs(tracker: Tracker) -> list[TrainingRun]:
    return list(tracker.training_runs.filter(state=TrainingState.SUCCEEDED).order_by("finished_at", "id"))


def pending_run(tracker: Tracker) -> TrainingRun | None:
    return tracker.training_runs.filter(state__in=[TrainingState.QUEUED, TrainingState.RUNNING]).first()


def quality(run: TrainingRun | None) -> dict | None:
    """The numbers a person reads: cross-validated (biased by active learning) and sample-based."""
    if run is None:
        return None
    est = run.metrics.get("estimates", {})
    cv = run.metrics.get("cv", {})
    return {
        "labels": (run.label_counts.get("yes", 0) + run.label_counts.get("no", 0)),
        "cv_precision": cv.get("precision"),
        "cv_recall": cv.get("recall"),
        "cv_f1": cv.get("f1"),
        "est_precision": est.get("precision"),
        "est_precision_ci": est.get("precision_ci"),
        "est_recall": est.get("recall"),
        "est_sizes": est.get("sample_sizes", {}),
        "threshold": run.threshold,
        "featurizer": run.featurizer,
        "run": run,
    }


def round_summary(tracker: Tracker, round_no: int | None = None) -> dict:
    r = round_no or game.current_round(tracker)
    in_round = Annotation.objects.filter(tracker=tracker, card__round=r)
    done = runs(tracker)
    return {
        "round": r,
        "positives": in_round.filter(answer="yes").count(),
        "answered": in_round.count(),
        "before": quality(done[-2]) if len(done) >= 2 else None,
        "after": quality(done[-1]) if done else None,
        "pending": pending_run(tracker),
        "counts": label_counts(tracker),
    }
