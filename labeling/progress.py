"""What the game and the tracker page show: counts, points, quality before and after."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count
from django.dispatch import Signal

from labeling import game, services
from labeling.ml.loop import NONE as NONE_ANSWER
from labeling.ml.training import FEATURIZER_NAMES
from labeling.models import Annotation, TrainingRun, TrainingState
from labeling.services import READY_LABELS, READY_PER_CLASS
from trackers.models import Tracker, TrackerKind

CORRECTION_POINTS = 4  # beside the point every answer earns: an answer that corrected the model
# A recall interval wider than this offers a check round (cards from just below the threshold).
CHECK_WIDTH = 0.2


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
        "until_ready": max(
            0, READY_LABELS - answered, *(READY_PER_CLASS - n for a, n in per if a != NONE_ANSWER)
        ),
        "ready_at": READY_LABELS,
        "ready_per_answer": READY_PER_CLASS,
    }
    if tracker.kind == TrackerKind.CONCEPT:
        out.update(yes=by.get("yes", 0), no=by.get("no", 0))
    return out


def corrected(
    card_score: float | None, card_label: str, threshold: float | None, answer: str, kind: str
) -> bool:
    """Whether an answer said the model was wrong about its card: a yes/no tracker's model predicted
    a match (score at or above its threshold then) and the answer is "no", or the reverse; a topic's
    predicted another label."""
    if kind == TrackerKind.TOPIC:
        return bool(card_label) and answer != card_label
    if card_score is None or threshold is None:
        return False
    return (card_score >= threshold) != (answer == "yes")


def player_stats(tracker: Tracker, user) -> dict:
    """A player's answers and points: a point per answer, ``CORRECTION_POINTS`` more for each that
    corrected the model (what trains it most), and how many did."""
    rows = (
        Annotation.objects.filter(tracker=tracker, annotator=user)
        .exclude(answer=Annotation.SKIP)
        .values_list("answer", "card__score", "card__label", "card__training_run__threshold")
    )
    answers = corrections = 0
    for answer, score, label, threshold in rows:
        answers += 1
        corrections += corrected(score, label or "", threshold, answer, tracker.kind)
    return {
        "answers": answers,
        "corrections": corrections,
        "points": answers + CORRECTION_POINTS * corrections,
    }


def runs(tracker: Tracker) -> list[TrainingRun]:
    """The runs that trained a head, oldest first."""
    return list(tracker.training_runs.filter(state=TrainingState.SUCCEEDED).order_by("finished_at", "id"))


def pending_run(tracker: Tracker) -> TrainingRun | None:
    return tracker.training_runs.filter(state__in=[TrainingState.QUEUED, TrainingState.RUNNING]).first()


def last_outcome(tracker: Tracker) -> TrainingRun | None:
    """The latest finished run, whatever its outcome."""
    return (
        tracker.training_runs.exclude(state__in=[TrainingState.QUEUED, TrainingState.RUNNING])
        .order_by("-finished_at", "-id")
        .first()
    )


def no_model_reason(tracker: Tracker) -> str | None:
    """Why the latest training left no new head, in words a labeler can act on; None if it did."""
    run = last_outcome(tracker)
    if run is None or run.state == TrainingState.SUCCEEDED:
        return None
    if run.state == TrainingState.NEEDS_ANSWERS:
        return f"No model yet: {run.error}. Answer the next round; training starts again when it is done."
    return (
        f"Training failed (attempt {run.attempt}): {run.error}. The next round is ready all the same; "
        "“Train now” tries again."
    )


@dataclass(frozen=True)
class Live:
    """The model that answers for a tracker now: its live version, as serving tells it."""

    run: TrainingRun
    version: int
    threshold: float | None  # the threshold in use (none for a topic tracker)
    threshold_source: str  # "owner", "training" or "none"
    threshold_set_by: str = ""  # who moved it, when it is the owner's
    threshold_set_at: datetime | None = None
    newer: int | None = None  # the number of a newer version that is not live
    newer_waits_because: str = ""


# Sent by what shows a tracker's numbers (``tracker``); serving answers with a ``Live`` for the
# tracker's live version, or None while no version is live.
asked_live = Signal()


def live(tracker: Tracker) -> Live | None:
    """The tracker's live model, or None while it has none."""
    for _, answer in asked_live.send(sender=Tracker, tracker=tracker):
        if isinstance(answer, Live):
            return answer
    return None


def _estimate(est: dict, name: str) -> tuple[float | None, list[float] | None]:
    value = est.get(name)
    if isinstance(value, dict):
        return value.get("value"), value.get("ci")
    return None, None


def quality(run: TrainingRun | None, now: Live | None = None) -> dict | None:
    """The numbers a person reads about ``run``: at the threshold in use when it is the live run
    (``now``), else at the threshold training chose for it.

    Cross-validated numbers come from the answers (which active learning chose where the model
    hesitates: biased); the estimates cover every text of the tracker, with 95% intervals
    (``labeling.ml.estimates``); ``check_offered`` when recall's is wider than ``CHECK_WIDTH``.
    Topic trackers: F1 is the macro average over labels and the estimated number is accuracy.
    """
    if run is None:
        return None
    tracker = run.tracker
    is_live = now is not None and now.run.pk == run.pk
    in_use = now.threshold if now is not None and is_live else services.threshold_in_use(tracker, run)
    live_part = run.metrics.get("live") or {}
    # Live traffic once enough of its texts were answered on cards drawn by chance; else the pool.
    population = services.LIVE if live_part.get("drawn", 0) >= LIVE_ESTIMATE_MIN else services.POOL
    est = services.estimates_for(run, in_use, population) or {}
    cv = run.metrics.get("cv", {})
    out = {
        "labels": sum(n for a, n in run.label_counts.items() if a != Annotation.SKIP),
        "cv_precision": cv.get("precision"),
        "cv_recall": cv.get("recall"),
        "cv_f1": cv.get("f1"),
        "cv_accuracy": cv.get("accuracy"),
        "precision_exact": bool(est.get("precision_exact")),
        "strata": est.get("strata", {}),
        "threshold": in_use,
        "training_threshold": run.threshold,
        "threshold_set_by": "owner"
        if now is not None and is_live and now.threshold_source == "owner"
        else "training",
        "featurizer": run.featurizer,
        "featurizer_name": FEATURIZER_NAMES.get(run.featurizer, run.featurizer),
        "live": is_live,
        "version": now.version if now is not None and is_live else None,
        "run": run,
        "population": population,
        "live_texts": live_part.get("texts", 0),
        "live_drawn": live_part.get("drawn", 0),
        "live_needed": LIVE_ESTIMATE_MIN,
    }
    for name in ("precision", "recall", "f1", "accuracy"):
        out[name], out[f"{name}_ci"] = _estimate(est, name)
    if population == services.LIVE:  # the training pool's, beside it
        pool = services.estimates_for(run, in_use) or {}
        out["pool_f1"], out["pool_f1_ci"] = _estimate(
            pool, "f1" if tracker.kind != TrackerKind.TOPIC else "accuracy"
        )
    ci = out["recall_ci"]
    out["recall_width"] = ci[1] - ci[0] if ci else None
    out["check_offered"] = (
        tracker.kind == TrackerKind.CONCEPT and ci is not None and ci[1] - ci[0] > CHECK_WIDTH
    )
    if tracker.kind == TrackerKind.TOPIC:
        out.update(_majority(run, cv.get("accuracy")))
    return out


# Answers on live texts drawn by chance (review rounds, and rounds that drew live texts) before the
# numbers shown describe live traffic rather than the training pool.
LIVE_ESTIMATE_MIN = 20

MAJORITY_MARGIN = 0.02  # accuracy this close to always answering the largest label says little


def _majority(run: TrainingRun, accuracy: float | None) -> dict:
    """The largest label among a topic run's answers, its share, and whether the cross-validated
    accuracy is within ``MAJORITY_MARGIN`` of always answering it (then macro-F1 is what to read)."""
    counts = {a: n for a, n in run.label_counts.items() if a != Annotation.SKIP and n}
    total = sum(counts.values())
    if not total:
        return {"majority_label": None, "majority_share": None, "accuracy_near_majority": False}
    label, n = max(counts.items(), key=lambda kv: kv[1])
    share = n / total
    return {
        "majority_label": label,
        "majority_share": share,
        "accuracy_near_majority": accuracy is not None and accuracy - share <= MAJORITY_MARGIN,
    }


def tracker_quality(tracker: Tracker) -> dict | None:
    """The tracker's numbers: its live version's, at the threshold in use; while no version is live,
    the latest run's (marked as not live)."""
    now = live(tracker)
    if now is not None:
        return quality(now.run, now)
    done = runs(tracker)
    return quality(done[-1]) if done else None


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
        "no_model": no_model_reason(tracker),
        "counts": label_counts(tracker),
        "live": live(tracker),
    }


def _fmt(value, ci=None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f} ({ci[0]:.2f}–{ci[1]:.2f})" if ci else f"{value:.2f}"


def comparison_rows(before: dict | None, after: dict | None, kind: str) -> list[tuple[str, str, str]]:
    """(measure, before, after) for the round summary; says which numbers are which."""
    if after is None:
        return []
    if kind == TrackerKind.TOPIC:
        measures = [
            ("Accuracy, all texts (estimated, 95% interval)", "accuracy", "accuracy_ci"),
            ("F1, mean over labels (cross-validated)", "cv_f1", None),
            ("Accuracy (cross-validated)", "cv_accuracy", None),
        ]
    else:
        measures = [
            ("Precision, all texts (estimated, 95% interval)", "precision", "precision_ci"),
            ("Recall, all texts (estimated, 95% interval)", "recall", "recall_ci"),
            ("F1, all texts (estimated, 95% interval)", "f1", "f1_ci"),
            ("F1 (cross-validated)", "cv_f1", None),
        ]
    rows = []
    for name, key, ci in measures:
        b = _fmt(before.get(key), before.get(ci) if ci else None) if before else "—"
        rows.append((name, b, _fmt(after.get(key), after.get(ci) if ci else None)))
    return rows
