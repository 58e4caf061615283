"""Training runs: request one per label watermark, run it, record quality, queue the next round."""

from __future__ import annotations

import time
from datetime import timedelta
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
    load_scorer,
    sample_estimates,
    save_scorer,
    scorer_of,
    train_binary,
)
from serving.models import TrainingRun, TrainingState
from trackers.models import Tracker, TrackerState

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
    return load_scorer(Path(run.head_file))


def training_set(tracker: Tracker, pool: game.Pool):
    """(indices into the pool, 0/1 answers) by majority over labelers, one row per distinct text."""
    index = pool.index_of()
    rows, ys = [], []
    for key, answers in game.labeled_keys(tracker).items():
        if key in index:
            rows.append(index[key])
            ys.append(1 if game.majority(answers) == "yes" else 0)
    return np.asarray(rows, dtype=np.int64), np.asarray(ys, dtype=np.int64)


def run_training(run: TrainingRun) -> None:
    """Fit the head on every answer so far and record its quality; idempotent per run."""
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
    small = len(pool.keys) <= settings.CHAR_FEATURES_MAX_POOL
    head = train_binary(
        pool.vectors[rows],
        y,
        texts=[pool.texts[i] for i in rows],
        target_precision=tracker.target_precision,
        featurizers=FEATURIZERS if small else ("embedding",),
    )
    scorer = scorer_of(head)
    scorer.threshold = tracker.effective_threshold(scorer.threshold)
    path = Path(settings.ARTIFACT_ROOT) / "trackers" / str(tracker.code) / f"head-{run.code}.npz"
    save_scorer(scorer, path)
    scores = scorer.score(pool.vectors, pool.texts)
    metrics = {
        "cv": head.cv,
        "featurizer_cv_f1": head.candidates,
        "pr_curve": head.pr_curve,
        "estimates": _estimates(tracker, pool, scores, scorer.threshold),
        "predicted_positive": int(np.sum(scores >= scorer.threshold)),
        "pool": len(pool.keys),
        "score_histogram": np.histogram(scores, bins=20, range=(0, 1))[0].tolist(),
        "top_unlabeled": _top_unlabeled(tracker, pool, scores),
    }
    # The round is over once every card is answered: queue the next one from this model, before the
    # run counts as done, so a player waiting on the run never sees an empty game.
    with transaction.atomic():
        if not game.open_cards(tracker).exists():
            game.fill_round(tracker, scorer=scorer, training_run=run)
    finish_run(
        run,
        TrainingState.SUCCEEDED,
        label_counts=counts,
        featurizer=head.featurizer,
        threshold=head.threshold,
        threshold_rule=head.threshold_rule if tracker.threshold_override is None else "set by the owner",
        metrics=metrics,
        head_file=str(path),
        duration_s=round(time.perf_counter() - started, 3),
    )
    labels = counts["yes"] + counts["no"]
    ready = labels >= READY_LABELS and min(counts["yes"], counts["no"]) >= READY_PER_CLASS
    Tracker.objects.filter(pk=tracker.pk).update(
        last_trained_at=timezone.now(),
        state=TrackerState.READY if ready and tracker.state == TrackerState.LABELING else tracker.state,
    )


def _top_unlabeled(tracker: Tracker, pool: game.Pool, scores: np.ndarray, n: int = 30) -> list[list]:
    """[segment id, score] of the best-scoring segments nobody has labeled, for "what it matches now"."""
    labeled = game.labeled_keys(tracker)
    top = []
    for i in np.argsort(-scores):
        if pool.keys[i] not in labeled:
            top.append([int(pool.segment_ids[i]), round(float(scores[i]), 4)])
            if len(top) == n:
                break
    return top


def _estimates(tracker: Tracker, pool: game.Pool, scores: np.ndarray, threshold: float) -> dict:
    index = pool.index_of()
    labeled = game.labeled_keys(tracker)

    def answers_of(strategy: str) -> tuple[np.ndarray, np.ndarray]:
        keys = set(
            Annotation.objects.filter(tracker=tracker, strategy=strategy)
            .exclude(answer=Annotation.SKIP)
            .values_list("segment__dataset_id", "segment__vector_row")
        )
        idx = [index[k] for k in keys if k in index and k in labeled]
        y = np.array([1 if game.majority(labeled[pool.keys[i]]) == "yes" else 0 for i in idx], dtype=np.int64)
        return np.asarray(idx, dtype=np.int64), y

    r_idx, r_y = answers_of("random")
    p_idx, p_y = answers_of("positive")
    est = sample_estimates(
        random_labels=r_y,
        random_scores=scores[r_idx] if len(r_idx) else np.zeros(0),
        positive_sample_labels=p_y,
        predicted_positive_count=int(np.sum(scores >= threshold)),
        pool_size=len(pool.keys),
        threshold=threshold,
    )
    est["note"] = (
        "from the uniform random sample and the sampled predicted matches; "
        "unbiased but wide until more rounds are played"
    )
    return est


def finish_run(run: TrainingRun, state: str, **fields) -> None:
    for k, v in fields.items():
        setattr(run, k, v)
    run.state, run.finished_at = state, timezone.now()
    run.save()
