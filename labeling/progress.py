"""What the game and the tracker page show: counts, points, streaks, quality before and after."""

from __future__ import annotations

from django.db.models import Count

from labeling import game
from labeling.models import Annotation
from serving.models import TrainingRun, TrainingState
from serving.services import READY_LABELS, READY_PER_CLASS
from trackers.models import Tracker, TrackerKind

POINTS_PER_ANSWER = 10


def label_counts(tracker: Tracker) -> dict:
    """Answers so far: ``per_answer`` [(answer, count)] in button order, plus yes/no for concepts."""
    by = dict(
        Annotation.objects.filter(tracker=tracker)
        .values("answer")
        .annotate(n=Count("id"))
        .values_list("answer", "n")
    )
    per = [(a, by.get(a, 0)) for a in tracker.answers]
    answered = sum(n for _, n in per)
    out = {
        "per_answer": per,
        "skip": by.get(Annotation.SKIP, 0),
        "answered": answered,
        "until_ready": max(0, READY_LABELS - answered, *(READY_PER_CLASS - n for _, n in per)),
    }
    if tracker.kind == TrackerKind.CONCEPT:
        out.update(yes=by.get("yes", 0), no=by.get("no", 0))
    return out


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
    """The numbers a person reads: cross-validated (biased by active learning) and sample-based.

    For topic trackers F1 is the macro average over labels, and the sampled number is accuracy.
    """
    if run is None:
        return None
    est = run.metrics.get("estimates", {})
    cv = run.metrics.get("cv", {})
    return {
        "labels": sum(n for a, n in run.label_counts.items() if a != Annotation.SKIP),
        "cv_precision": cv.get("precision"),
        "cv_recall": cv.get("recall"),
        "cv_f1": cv.get("f1"),
        "cv_accuracy": cv.get("accuracy"),
        "est_precision": est.get("precision"),
        "est_precision_ci": est.get("precision_ci"),
        "est_recall": est.get("recall"),
        "est_accuracy": est.get("accuracy"),
        "est_accuracy_ci": est.get("accuracy_ci"),
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
        "positives": in_round.filter(answer="yes").count()
        if tracker.kind == TrackerKind.CONCEPT
        else in_round.exclude(answer=Annotation.SKIP).count(),
        "answered": in_round.count(),
        "before": quality(done[-2]) if len(done) >= 2 else None,
        "after": quality(done[-1]) if done else None,
        "rows": comparison_rows(
            quality(done[-2]) if len(done) >= 2 else None, quality(done[-1]) if done else None, tracker.kind
        ),
        "pending": pending_run(tracker),
        "counts": label_counts(tracker),
    }


def _fmt(value, ci=None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f} ({ci[0]:.2f}–{ci[1]:.2f})" if ci else f"{value:.2f}"


def comparison_rows(before: dict | None, after: dict | None, kind: str) -> list[tuple[str, str, str]]:
    """(measure, before, after) for the round summary; says which numbers are cross-validated."""
    if after is None:
        return []
    if kind == TrackerKind.TOPIC:
        measures = [
            ("F1, mean over labels (cross-validated)", "cv_f1", None),
            ("Accuracy (cross-validated)", "cv_accuracy", None),
            ("Accuracy (sampled, 95% interval)", "est_accuracy", "est_accuracy_ci"),
        ]
    else:
        measures = [
            ("F1 (cross-validated)", "cv_f1", None),
            ("Precision (cross-validated)", "cv_precision", None),
            ("Recall (cross-validated)", "cv_recall", None),
            ("Precision (sampled, 95% interval)", "est_precision", "est_precision_ci"),
        ]
    rows = []
    for name, key, ci in measures:
        b = _fmt(before.get(key), before.get(ci) if ci else None) if before else "—"
        rows.append((name, b, _fmt(after.get(key), after.get(ci) if ci else None)))
    return rows
