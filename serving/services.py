"""Training runs: request one per label watermark, run it, record quality, queue the next round."""

from __future__ import annotations

import time
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from labeling import game
from labeling.models import Annotation
from serving.ml.training import (
    FEATURIZERS,
    background_sample,
    load_scorer,
    sample_estimates,
    save_scorer,
    scorer_of,
    topic_estimates,
    topic_scorer_of,
    train_binary,
    train_topic,
)
from serving.models import TrainingRun, TrainingState
from trackers.models import Granularity, Tracker, TrackerKind, TrackerState

READY_LABELS = 100  # answers (not skips) before a tracker counts as ready
READY_PER_CLASS = 5


def request_training(tracker: Tracker) -> tuple[TrainingRun, bool]:
    """A training run for the tracker's current answers; asking again for the same answers does nothing."""
    run, created = TrainingRun.objects.get_or_create(tracker=tracker, watermark=game.label_watermark(tracker))
    if created:
        from serving.tasks import train_tracker

        run_id = run.pk
        transaction.on_commit(lambda: train_tracker.delay(training_run_id=run_id))
    return run, created


def requeue_stale_runs() -> list[int]:
    """Send again training runs whose worker died or whose message was lost; claiming keeps it single."""
    from serving.tasks import train_tracker

    stale = timezone.now() - timedelta(seconds=settings.JOB_STALE_SECONDS)
    ids = list(
        TrainingRun.objects.filter(
            Q(state=TrainingState.RUNNING, heartbeat_at__lt=stale)
            | Q(state=TrainingState.QUEUED, created_at__lt=stale)
        ).values_list("pk", flat=True)
    )
    for run_id in ids:
        transaction.on_commit(lambda run_id=run_id: train_tracker.delay(training_run_id=run_id))
    return ids


def claim_run(run_id: int) -> TrainingRun | None:
    now = timezone.now()
    stale = now - timedelta(seconds=settings.JOB_STALE_SECONDS)
    claimable = Q(state=TrainingState.QUEUED) | Q(state=TrainingState.RUNNING, heartbeat_at__lt=stale)
    if TrainingRun.objects.filter(claimable, pk=run_id).update(state=TrainingState.RUNNING, heartbeat_at=now):
        return TrainingRun.objects.select_related("tracker").get(pk=run_id)
    return None


def scorer_for(run: TrainingRun):
    return _scorer_at(run.head_file)


@lru_cache(maxsize=64)
def _scorer_at(path: str):
    """A stored head, read once per process: a head file is written once, under its run's name."""
    return load_scorer(Path(path))


def training_set(tracker: Tracker, pool: game.Pool):
    """(indices into the pool, answers) by majority over labelers, one row per pool entry.

    Concept trackers: 1 for yes, 0 for no. Topic trackers: the index of the label in
    ``tracker.labels`` (answers naming a label since removed are left out).
    """
    index = pool.index_of()
    classes = (
        {"yes": 1, "no": 0}
        if tracker.kind == TrackerKind.CONCEPT
        else {n: i for i, n in enumerate(tracker.labels)}
    )
    rows, ys = [], []
    for key, answers in game.labeled_keys(tracker).items():
        answer = classes.get(game.majority(answers))
        if key in index and answer is not None:
            rows.append(index[key])
            ys.append(answer)
    return np.asarray(rows, dtype=np.int64), np.asarray(ys, dtype=np.int64)


def _head_path(tracker: Tracker, run: TrainingRun) -> Path:
    return Path(settings.ARTIFACT_ROOT) / "trackers" / str(tracker.code) / f"head-{run.code}.npz"


def run_training(run: TrainingRun) -> None:
    """Fit the head on every answer so far and record its quality; idempotent per run."""
    if run.tracker.kind == TrackerKind.TOPIC:
        return _run_topic_training(run)
    tracker = run.tracker
    started = time.perf_counter()
    pool = game.build_pool(tracker)
    rows, y = training_set(tracker, pool)
    counts = {
        "yes": int(y.sum()),
        "no": int(len(y) - y.sum()),
        "skip": Annotation.objects.filter(tracker=tracker, answer=Annotation.SKIP).count(),
    }
    if counts["yes"] == 0 or counts["no"] == 0:
        finish_run(
            run,
            TrainingState.FAILED,
            label_counts=counts,
            error="training needs at least one 'yes' and one 'no' answer",
        )
        return
    # Character n-grams help on short texts; documents and very large pools use the vectors alone.
    chars = len(pool.keys) <= settings.CHAR_FEATURES_MAX_POOL and tracker.granularity == Granularity.SEGMENT
    background = background_sample(len(pool.keys), rows)  # unlabeled segments as weak 'no' rows
    head = train_binary(
        pool.vectors[rows],
        y,
        texts=[pool.texts[i] for i in rows],
        target_precision=tracker.target_precision,
        featurizers=FEATURIZERS if chars else ("embedding",),
        background_vectors=pool.vectors[background],
        background_texts=[pool.texts[i] for i in background],
    )
    scorer = scorer_of(head)
    scorer.threshold = tracker.effective_threshold(scorer.threshold)
    path = _head_path(tracker, run)
    save_scorer(scorer, path)
    scores = scorer.score(pool.vectors, pool.texts)
    metrics = {
        "cv": head.cv,
        "featurizer_cv_f1": head.candidates,
        "background_no_rows": head.background,
        "pr_curve": head.pr_curve,
        "estimates": _estimates(tracker, pool, scores, scorer.threshold),
        "predicted_positive": int(np.sum(scores >= scorer.threshold)),
        "pool": len(pool.keys),
        "score_histogram": np.histogram(scores, bins=20, range=(0, 1))[0].tolist(),
        "top_unlabeled": _top_unlabeled(tracker, pool, scores),
    }
    _next_round_then_finish(
        run,
        scorer,
        label_counts=counts,
        featurizer=head.featurizer,
        threshold=head.threshold,
        threshold_rule=head.threshold_rule if tracker.threshold_override is None else "set by the owner",
        metrics=metrics,
        head_file=str(path),
        duration_s=round(time.perf_counter() - started, 3),
    )
    _mark_ready(tracker, [counts["yes"], counts["no"]])


def _run_topic_training(run: TrainingRun) -> None:
    tracker = run.tracker
    started = time.perf_counter()
    pool = game.build_pool(tracker)
    rows, y = training_set(tracker, pool)
    per_label = (
        np.bincount(y, minlength=len(tracker.labels)).tolist() if len(y) else [0] * len(tracker.labels)
    )
    counts = {
        **dict(zip(tracker.labels, per_label, strict=True)),
        "skip": Annotation.objects.filter(tracker=tracker, answer=Annotation.SKIP).count(),
    }
    if sum(1 for c in per_label if c) < 2:
        finish_run(
            run,
            TrainingState.FAILED,
            label_counts=counts,
            error="training needs answers for at least two labels",
        )
        return
    head = train_topic(pool.vectors[rows], y, tracker.labels)
    scorer = topic_scorer_of(head)
    path = _head_path(tracker, run)
    save_scorer(scorer, path)
    proba = scorer.probabilities(pool.vectors)
    predicted = np.argmax(proba, axis=1)
    metrics = {
        "cv": head.cv,
        "estimates": _topic_estimates(tracker, pool, predicted),
        "predicted_counts": np.bincount(predicted, minlength=len(tracker.labels)).tolist(),
        "pool": len(pool.keys),
        "score_histogram": np.histogram(proba.max(axis=1), bins=20, range=(0, 1))[0].tolist(),
        "top_unlabeled": _top_unlabeled(tracker, pool, proba.max(axis=1), predicted=predicted),
    }
    _next_round_then_finish(
        run,
        scorer,
        label_counts=counts,
        featurizer=head.featurizer,
        threshold=None,
        threshold_rule="most likely label",
        metrics=metrics,
        head_file=str(path),
        duration_s=round(time.perf_counter() - started, 3),
    )
    _mark_ready(tracker, per_label)


def _next_round_then_finish(run: TrainingRun, scorer, **fields) -> None:
    # The round is over once every card is answered: queue the next one from this model, before the
    # run counts as done, so a player waiting on the run never sees an empty game.
    with transaction.atomic():
        if not game.open_cards(run.tracker).exists():
            game.fill_round(run.tracker, scorer=scorer, training_run=run)
    finish_run(run, TrainingState.SUCCEEDED, **fields)


def _mark_ready(tracker: Tracker, per_class: list[int]) -> None:
    ready = sum(per_class) >= READY_LABELS and min(per_class) >= READY_PER_CLASS
    Tracker.objects.filter(pk=tracker.pk).update(
        last_trained_at=timezone.now(),
        state=TrackerState.READY if ready and tracker.state == TrackerState.LABELING else tracker.state,
    )


def _top_unlabeled(
    tracker: Tracker, pool: game.Pool, scores: np.ndarray, n: int = 30, predicted: np.ndarray | None = None
) -> list[list]:
    """[segment id, score(, label)] of the best-scoring entries nobody has labeled: "what it matches now".

    Topic trackers get the top ones of every label, taken in turn.
    """
    labeled = game.labeled_keys(tracker)
    unlabeled = [i for i in np.argsort(-scores) if pool.keys[i] not in labeled]
    if predicted is None:
        return [[int(pool.segment_ids[i]), round(float(scores[i]), 4)] for i in unlabeled[:n]]
    per_label = max(1, n // max(1, len(tracker.labels)))
    top = []
    for c, name in enumerate(tracker.labels):
        best = [i for i in unlabeled if predicted[i] == c][:per_label]
        top += [[int(pool.segment_ids[i]), round(float(scores[i]), 4), name] for i in best]
    return top


def _answers_by_strategy(tracker: Tracker, pool: game.Pool, strategy: str) -> tuple[np.ndarray, list[str]]:
    """Pool indices and majority answers of the entries whose card ``strategy`` chose."""
    index = pool.index_of()
    labeled = game.labeled_keys(tracker)
    keys = set(
        game.keys_of(
            tracker,
            Annotation.objects.filter(tracker=tracker, strategy=strategy).exclude(answer=Annotation.SKIP),
        )
    )
    idx = [index[k] for k in keys if k in index and k in labeled]
    return np.asarray(idx, dtype=np.int64), [game.majority(labeled[pool.keys[i]]) for i in idx]


def _estimates(tracker: Tracker, pool: game.Pool, scores: np.ndarray, threshold: float) -> dict:
    r_idx, r_answers = _answers_by_strategy(tracker, pool, "random")
    p_idx, p_answers = _answers_by_strategy(tracker, pool, "positive")
    est = sample_estimates(
        random_labels=np.array([a == "yes" for a in r_answers], dtype=np.int64),
        random_scores=scores[r_idx] if len(r_idx) else np.zeros(0),
        positive_sample_labels=np.array([a == "yes" for a in p_answers], dtype=np.int64),
        predicted_positive_count=int(np.sum(scores >= threshold)),
        pool_size=len(pool.keys),
        threshold=threshold,
    )
    est["note"] = (
        "from the uniform random sample and the sampled predicted matches; "
        "unbiased but wide until more rounds are played"
    )
    return est


def _topic_estimates(tracker: Tracker, pool: game.Pool, predicted: np.ndarray) -> dict:
    r_idx, r_answers = _answers_by_strategy(tracker, pool, "random")
    classes = {n: i for i, n in enumerate(tracker.labels)}
    keep = [j for j, a in enumerate(r_answers) if a in classes]
    est = topic_estimates(
        np.array([classes[r_answers[j]] for j in keep], dtype=np.int64),
        predicted[r_idx[keep]] if keep else np.zeros(0, dtype=np.int64),
        tracker.labels,
    )
    est["note"] = (
        "accuracy on the uniform random sample of the pool: unbiased but wide until more rounds are played"
    )
    return est


def finish_run(run: TrainingRun, state: str, **fields) -> None:
    for k, v in fields.items():
        setattr(run, k, v)
    run.state, run.finished_at = state, timezone.now()
    run.save()
