"""The learning loop's services: create a tracker, request and run training, queue the next round.

The decisions themselves (what trains, which cards come next, how good the head is) are made by
``labeling.ml.loop`` and ``labeling.ml.estimates`` on arrays; this module reads the arrays from the
database, calls them, and records what they decided.
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from labeling import game
from labeling.ml import loop
from labeling.ml.estimates import ConceptEvidence, TopicEvidence, concept_estimates, topic_estimates
from labeling.ml.training import Head, LinearScorer, TopicHead, load_scorer, save_scorer
from labeling.models import Annotation, Card, TrainingRun, TrainingState
from trackers import audit, backup, bucket, definitions, deletion, encoders, errors, work
from trackers import services as corpus
from trackers.ml.storage import write_atomic
from trackers.models import (
    AuditAction,
    Dataset,
    Document,
    Granularity,
    Segment,
    Tracker,
    TrackerKind,
    TrackerState,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import User

READY_LABELS = 100  # answers (not skips) before a tracker counts as ready
READY_PER_CLASS = 5
TOP_UNLABELED = 200  # best-scoring unanswered entries kept with each run ("what it matches now")


class TrainingRefused(errors.Conflict):
    """Training cannot be asked for now (these answers failed to train too many times)."""


def create_tracker(**definition: Any) -> Tracker:
    """A tracker from its definition (checked by ``trackers.definitions.define_tracker``) with its first round.

    Example sentences found in the data are answered from the start ('yes', or their label), so
    they are never shown as cards.
    """
    if definition.get("kind") == TrackerKind.TOPIC:
        _check_labels_are_not_answers(definition.get("labels") or [])
    with transaction.atomic():
        tracker = definitions.define_tracker(**definition)
        _answer_examples_found(tracker)
        game.fill_round(tracker)
        audit.record(
            AuditAction.TRACKER_CREATED,
            workspace=tracker.workspace,
            target=tracker.name,
            code=tracker.code,
            detail={"kind": tracker.kind, "granularity": tracker.granularity},
            user=definition.get("user"),
        )
    return tracker


GAME_ANSWERS = (Annotation.SKIP, loop.NONE)  # what a labeler may answer besides a topic's labels


def _check_labels_are_not_answers(labels: list[str]) -> None:
    reserved = next((n for n in labels if " ".join(n.split()).lower() in GAME_ANSWERS), None)
    if reserved:
        raise definitions.TrackerInvalid(
            f"'{reserved.strip()}' is reserved ('skip' skips a card, 'none' answers that no label fits); "
            "choose another label name",
            field="labels",
        )


def _answer_examples_found(tracker: Tracker) -> None:
    if tracker.granularity != Granularity.SEGMENT or tracker.created_by is None:
        return
    eligible = game.eligible_segments(tracker)
    for seed in tracker.seeds.all():
        segment = eligible.filter(text_hash=corpus.text_hash(seed.text)).order_by("id").first()
        if segment is None:
            continue
        seed.segment = segment
        seed.save(update_fields=["segment"])
        Annotation.objects.get_or_create(
            tracker=tracker,
            segment=segment,
            annotator=tracker.created_by,
            defaults={"answer": seed.label, "strategy": loop.EXAMPLE},
        )


def request_training(tracker: Tracker) -> tuple[TrainingRun, bool]:
    """A training run for the tracker's current answers; asking again for the same answers returns it.

    A failed run does not count: asking again after a failure makes a new attempt, up to
    ``WORK_MAX_ATTEMPTS`` attempts for the same answers.
    """
    watermark = game.label_watermark(tracker)
    runs = TrainingRun.objects.filter(tracker=tracker, watermark=watermark)
    live = runs.exclude(state=TrainingState.FAILED).first()
    if live is not None:
        return live, False
    failed = list(runs.filter(state=TrainingState.FAILED).order_by("-attempt"))
    if len(failed) >= settings.WORK_MAX_ATTEMPTS:
        raise TrainingRefused(
            f"training failed {len(failed)} times on these answers (last error: {failed[0].error}); "
            "add or change answers to try again"
        )
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(tracker=tracker, watermark=watermark, attempt=len(failed) + 1)
    except IntegrityError:  # a concurrent request for the same answers made it first
        return runs.exclude(state=TrainingState.FAILED).get(), False
    work.enqueue(run)
    return run, True


def requeue_stale_runs() -> dict[str, list[int]]:
    """Send again training runs whose worker died or whose message was lost; claiming keeps it single."""
    return work.sweep(TrainingRun)


def answer_card(tracker: Tracker, user: User, card: Card, answer: str) -> tuple[Annotation, bool]:
    """Record an answer to a card; when it completes the round, ask for training (which queues the next).
    A card another labeler holds is refused (``CardHeld``)."""
    if game.held_by_another(card, user):
        raise game.CardHeld("this card is being answered by another labeler")
    annotation, created = game.record_label(tracker, user, segment=card.segment, answer=answer, card=card)
    if created and not game.open_cards(tracker).exists():
        try:
            request_training(tracker)
        except TrainingRefused:
            _fill_next_round(tracker)
    return annotation, created


def _fill_next_round(tracker: Tracker, **kwargs: Any) -> None:
    """Queue the next round unless one is open: every run outcome ends with cards to play."""
    with transaction.atomic():
        # Two runs finishing at once would each see no open card: one at a time per tracker.
        Tracker.objects.select_for_update().filter(pk=tracker.pk).first()
        if not game.open_cards(tracker).exists():
            game.fill_round(tracker, **kwargs)


class CheckRefused(errors.Conflict):
    """A check round cannot start now (a topic tracker, or no model to check yet)."""


def start_check_round(tracker: Tracker, run: TrainingRun | None, threshold: float | None) -> list[Card]:
    """Put a round that checks what ``run``'s model misses at ``threshold`` in place of the open
    round's cards nobody holds (``game.fill_check_round``): its answers count in the estimates,
    weighted by how they were drawn, and train the next version like any answer. The replaced
    cards' texts may be drawn again later."""
    _check_model(tracker, run, threshold, CheckRefused, "a check round", "check")
    with transaction.atomic():
        Tracker.objects.select_for_update().filter(pk=tracker.pk).first()
        return _replace_open_round(
            tracker,
            run,
            threshold,
            game.fill_check_round,
            CheckRefused("every text below the threshold is answered or on a card: none is left to check"),
        )


def _check_model(
    tracker: Tracker,
    run: TrainingRun | None,
    threshold: float | None,
    refused: type[errors.Conflict],
    what: str,
    verb: str,
) -> None:
    if tracker.kind == TrackerKind.TOPIC:
        raise refused(f"{what} is for yes/no trackers: a topic tracker has no threshold")
    if run is None or threshold is None or not run.has_model or run.tracker_id != tracker.pk:
        raise refused(f"there is no model of this tracker to {verb} yet")


def _replace_open_round(
    tracker: Tracker,
    run: Any,
    threshold: Any,
    fill: Any,
    empty: errors.Conflict,
    by: User | None = None,
) -> list[Card]:
    """In place of the open round's cards nobody holds (or ``by`` holds), the cards ``fill`` draws
    from ``run``'s scores of the pool at ``threshold``; ``empty`` when it draws none (the replaced
    cards come back with the refusal: the caller's transaction rolls back). Call it holding the
    tracker's row."""
    now = timezone.now()
    free = Q(claimed_until__isnull=True) | Q(claimed_until__lte=now)
    if by is not None:
        free |= Q(claimed_by=by)
    game.open_cards(tracker).filter(free).filter(annotations__isnull=True).delete()
    inputs = game.loop_inputs(tracker)
    scores = inputs.arrays.scores(scorer_for(run))
    cards: list[Card] = fill(tracker, scores=scores, threshold=threshold, training_run=run, inputs=inputs)
    if not cards:
        raise empty
    return cards


class ReviewRefused(errors.Conflict):
    """A review of live traffic cannot start now (why, in words)."""


def start_review_round(
    tracker: Tracker, run: TrainingRun | None, threshold: float | None, by: User | None = None
) -> list[Card]:
    """Put a round of the tracker's kept live texts (``game.fill_review_round``) in place of the open
    round's cards nobody else holds (``by`` asked for it: theirs go too): drawn with known chances,
    its answers estimate how the live model does on live traffic and train the next version like
    any answer."""
    _check_model(tracker, run, threshold, ReviewRefused, "a review of live traffic", "review")
    with transaction.atomic():
        Tracker.objects.select_for_update().filter(pk=tracker.pk).first()
        if not game.eligible_segments(tracker).filter(dataset__origin=Dataset.LIVE).exists():
            raise ReviewRefused(
                "no live text is kept yet: turn keeping on under In production, and let the API score some texts"
            )
        return _replace_open_round(
            tracker,
            run,
            threshold,
            game.fill_review_round,
            ReviewRefused("every kept live text is answered, on a card, or the same as an answered text"),
            by,
        )


def after_training_failed(sender: type[TrainingRun], row: TrainingRun, **kwargs: Any) -> None:
    """A failed (or abandoned) run still leaves the tracker a next round, from the fallback."""
    _fill_next_round(row.tracker)


# --- training ----------------------------------------------------------------------------


def scorer_for(run: TrainingRun) -> LinearScorer:
    return _scorer_at(str(bucket.fetched(run.head_file)))


@lru_cache(maxsize=64)
def _scorer_at(path: str) -> LinearScorer:
    """A stored head, read once per process: a head file is written once, under its run's name."""
    return load_scorer(Path(path))


def _artifact(tracker: Tracker, run: TrainingRun, name: str) -> Path:
    return Path(settings.ARTIFACT_ROOT) / "trackers" / str(tracker.code) / f"{name}-{run.code}.npz"


def threshold_in_use(tracker: Tracker, run: TrainingRun | None) -> float | None:
    """The threshold a run's numbers are read at in the game: none for a topic tracker (it answers
    with its most likely label), else the one training chose for the tracker's target precision.
    The threshold a version answers with (an owner may move it) is serving's
    (``serving.versions.services.threshold_of``); pages get it with the live run (``progress.live``)."""
    if tracker.kind == TrackerKind.TOPIC or run is None:
        return None
    return run.threshold


def run_training(run: TrainingRun) -> None:
    """Fit the head on every answer so far, record its quality, and queue the next round.

    Every outcome leaves a next round: from the new head, or from the fallback when the answers
    cannot train one yet (the run then says which answers are missing) or when training fails.
    """
    tracker = run.tracker
    started = time.perf_counter()
    inputs = game.loop_inputs(tracker)
    work.heartbeat(run)
    counts = _label_counts(tracker, inputs)
    trained = loop.train(
        inputs.arrays,
        inputs.answers,
        inputs.spec,
        example_vectors=inputs.typed_vectors,
        example_token_ids=inputs.typed_token_ids,
        not_background=np.flatnonzero(inputs.pool.live_mask()),
    )
    work.heartbeat(run)
    if trained.head is None:
        _fill_next_round(tracker, inputs=inputs, training_run=run)
        work.finish(run, TrainingState.NEEDS_ANSWERS, label_counts=counts, error=trained.reason)
        return
    assert trained.scorer is not None and trained.scores is not None
    path = _artifact(tracker, run, "head")
    save_scorer(trained.scorer, path)
    live = inputs.pool.live_mask()
    # Two populations: the training pool (what was imported), and live traffic (what the tracker
    # scored in production and kept), each estimated from its own texts and answers.
    evidence = loop.evidence(
        trained, inputs.answers, len(inputs.pool.keys), within=~live if live.any() else None
    )
    _save_evidence(_artifact(tracker, run, "evidence"), evidence)
    bucket.push(path)  # shared with other hosts (trackers.bucket) before the run's row names them
    bucket.push(_artifact(tracker, run, "evidence"))
    live_evidence = (
        loop.evidence(trained, inputs.answers, len(inputs.pool.keys), within=live) if live.any() else None
    )
    if live_evidence is not None:
        _save_evidence(_artifact(tracker, run, "live-evidence"), live_evidence)
        bucket.push(_artifact(tracker, run, "live-evidence"))
    if isinstance(trained.head, TopicHead):
        fields = _topic_fields(tracker, inputs, trained, evidence)
        in_use = None
    else:
        run.threshold = trained.head.threshold
        in_use = threshold_in_use(tracker, run)
        assert in_use is not None, "the run's own threshold was just set"
        fields = _concept_fields(tracker, inputs, trained, evidence, in_use)
    if live_evidence is not None:
        fields["metrics"]["live"] = _live_fields(inputs, live_evidence, in_use)
    _fill_next_round(tracker, inputs=inputs, trained=trained, threshold=in_use, training_run=run)
    work.finish(
        run,
        TrainingState.SUCCEEDED,
        label_counts=counts,
        head_file=str(path),
        duration_s=round(time.perf_counter() - started, 3),
        **fields,
    )
    _mark_ready(tracker, [n for a, n in counts.items() if a not in (Annotation.SKIP, loop.NONE)])


def _label_counts(tracker: Tracker, inputs: game.LoopInputs) -> dict[str, int]:
    per_class = np.bincount(inputs.answers.classes, minlength=len(inputs.spec.classes))
    names = inputs.spec.classes
    counts = {name: int(per_class[i]) for i, name in enumerate(names)}
    if tracker.kind == TrackerKind.CONCEPT:
        counts = {"yes": counts["yes"], "no": counts["no"]}
    counts["skip"] = Annotation.objects.filter(tracker=tracker, answer=Annotation.SKIP).count()
    return counts


def _concept_fields(
    tracker: Tracker,
    inputs: game.LoopInputs,
    trained: loop.Trained,
    evidence: ConceptEvidence | TopicEvidence,
    in_use: float,
) -> dict[str, Any]:
    head = trained.head
    scores = trained.scores
    assert isinstance(head, Head) and scores is not None and isinstance(evidence, ConceptEvidence)
    return {
        "featurizer": head.featurizer,
        "threshold": head.threshold,
        "threshold_rule": head.threshold_rule,
        "metrics": {
            "cv": head.cv,
            "featurizer_cv_f1": head.candidates,
            "background_no_rows": head.background,
            "example_yes_rows": head.examples,
            "pr_curve": head.pr_curve,
            "estimates": concept_estimates(evidence, in_use),
            "pool": len(inputs.pool.keys),
            "score_histogram": np.histogram(scores, bins=20, range=(0, 1))[0].tolist(),
            "top_unlabeled": _top_unlabeled(inputs, scores),
        },
    }


def _topic_fields(
    tracker: Tracker,
    inputs: game.LoopInputs,
    trained: loop.Trained,
    evidence: ConceptEvidence | TopicEvidence,
) -> dict[str, Any]:
    head = trained.head
    proba = trained.scores
    assert isinstance(head, TopicHead) and proba is not None and isinstance(evidence, TopicEvidence)
    predicted = np.argmax(proba, axis=1)
    estimates = topic_estimates(evidence, inputs.spec.classes)
    return {
        "featurizer": head.featurizer,
        "threshold": None,
        "threshold_rule": "most likely label",
        "metrics": {
            "cv": head.cv,
            "estimates": estimates,
            "predicted_counts": [s["predicted"] for s in estimates["shares"]],
            "classes": inputs.spec.classes,
            "pool": len(inputs.pool.keys),
            "score_histogram": np.histogram(proba.max(axis=1), bins=20, range=(0, 1))[0].tolist(),
            "top_unlabeled": _top_unlabeled(inputs, proba.max(axis=1), predicted, inputs.spec.classes),
        },
    }


def _live_fields(
    inputs: game.LoopInputs, evidence: ConceptEvidence | TopicEvidence, in_use: float | None
) -> dict[str, Any]:
    """The live traffic population's numbers: its size, its answers drawn by chance, its estimates."""
    drawn = (
        np.isfinite(evidence.answered_probability)
        if isinstance(evidence, ConceptEvidence)
        else (np.isin(evidence.answered_strategy, ["random", "positive"]))
    )
    return {
        "texts": int(np.sum(inputs.pool.live_mask())),
        "answered": len(evidence.answered_y),
        "drawn": int(np.sum(drawn)),
        "estimates": concept_estimates(evidence, in_use)
        if isinstance(evidence, ConceptEvidence) and in_use is not None
        else topic_estimates(evidence, inputs.spec.classes)
        if isinstance(evidence, TopicEvidence)
        else None,
    }


def _save_evidence(path: Path, evidence: ConceptEvidence | TopicEvidence) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, allow_pickle=False, kind=type(evidence).__name__, **evidence.arrays())

    write_atomic(path, write)


@lru_cache(maxsize=32)
def _evidence_at(path: str) -> ConceptEvidence | TopicEvidence:
    with np.load(path) as z:
        if str(z["kind"]) == "TopicEvidence":
            return TopicEvidence.from_arrays(z)
        return ConceptEvidence.from_arrays(z)


POOL, LIVE = "pool", "live"  # the populations an estimate describes


def evidence_for(run: TrainingRun, population: str = POOL) -> ConceptEvidence | TopicEvidence | None:
    if not run.has_model:
        return None
    path = bucket.fetched(_artifact(run.tracker, run, "evidence" if population == POOL else "live-evidence"))
    return _evidence_at(str(path)) if path.exists() else None


@lru_cache(maxsize=256)
def _concept_estimates_at(path: str, threshold: float) -> dict[str, Any]:
    evidence = _evidence_at(path)
    assert isinstance(evidence, ConceptEvidence)
    return concept_estimates(evidence, threshold)


def estimates_for(run: TrainingRun, threshold: float | None, population: str = POOL) -> dict[str, Any] | None:
    """The run's estimates over a population (the training pool, or live traffic) at ``threshold``
    (concepts), recomputed if the owner moved it."""
    if not run.has_model:
        return None
    stored: dict[str, Any] | None = (
        run.metrics.get("estimates")
        if population == POOL
        else (run.metrics.get("live") or {}).get("estimates")
    )
    if run.tracker.kind == TrackerKind.TOPIC or threshold is None:
        return stored
    if stored and abs(stored.get("threshold", -1) - threshold) < 1e-9:
        return stored
    name = "evidence" if population == POOL else "live-evidence"
    path = bucket.fetched(_artifact(run.tracker, run, name))
    return _concept_estimates_at(str(path), float(threshold)) if path.exists() else stored


def matches_now(
    run: TrainingRun, threshold: float | None, n: int = 10
) -> tuple[list[tuple[float, Segment, str | None]], int | None]:
    """The unanswered texts the head matches at the threshold in use, best first, and how many there are.

    Topic trackers: the top ones of every label (not "none"), taken in turn.
    """
    top = run.metrics.get("top_unlabeled", [])
    answered = set(
        Annotation.objects.filter(tracker=run.tracker, segment_id__in=[row[0] for row in top]).values_list(
            "segment_id", flat=True
        )
    )
    if run.tracker.kind == TrackerKind.TOPIC:
        kept = [row for row in top if row[0] not in answered and row[2] != loop.NONE]
        count = None
        per_label: dict[str, int] = {}
        chosen = []
        for row in kept:
            per_label[row[2]] = per_label.get(row[2], 0) + 1
            if per_label[row[2]] <= max(1, n // 2):
                chosen.append(row)
    else:
        chosen = [
            row for row in top if row[0] not in answered and threshold is not None and row[1] >= threshold
        ]
        chosen = chosen[:n]
        evidence = evidence_for(run)
        count = (
            int(np.sum(evidence.unanswered_scores >= threshold))
            if isinstance(evidence, ConceptEvidence) and threshold is not None
            else len(chosen)
        )
    segs = Segment.objects.select_related("document").in_bulk([row[0] for row in chosen])
    return [
        (row[1], segs[row[0]], row[2] if len(row) > 2 else None) for row in chosen if row[0] in segs
    ], count


def _mark_ready(tracker: Tracker, per_class: list[int]) -> None:
    ready = sum(per_class) >= READY_LABELS and min(per_class) >= READY_PER_CLASS
    Tracker.objects.filter(pk=tracker.pk).update(
        last_trained_at=timezone.now(),
        state=TrackerState.READY if ready and tracker.state == TrackerState.LABELING else tracker.state,
    )


def _top_unlabeled(
    inputs: game.LoopInputs,
    scores: np.ndarray,
    predicted: np.ndarray | None = None,
    classes: list[str] | None = None,
) -> list[list[int | float | str]]:
    """[segment id, score(, label)] of the best-scoring unanswered entries: "what it matches now"."""
    answered = set(inputs.answers.rows.tolist())
    order = [int(i) for i in np.argsort(-scores, kind="stable") if int(i) not in answered]
    if predicted is None or classes is None:
        return [[int(inputs.pool.segment_ids[i]), round(float(scores[i]), 4)] for i in order[:TOP_UNLABELED]]
    per_label = max(1, TOP_UNLABELED // len(classes))
    top: list[list[int | float | str]] = []
    for c, name in enumerate(classes):
        best = [i for i in order if predicted[i] == c][:per_label]
        top += [[int(inputs.pool.segment_ids[i]), round(float(scores[i]), 4), name] for i in best]
    return top


DOCUMENT_LINES_SHOWN = 200


def key_lines(tracker: Tracker, document: Document, n: int = 3) -> tuple[list[Segment], set[int]]:
    """A document card's lines (up to ``DOCUMENT_LINES_SHOWN``) and the ids of its key lines.

    ``n`` key lines, fewer in short documents (one per three lines), so they stay a hint.

    Key lines are those the tracker's latest model scores highest; before any training, those
    closest in meaning to the tracker's example sentences.
    """
    lines = list(Segment.objects.filter(document=document).order_by("position")[:DOCUMENT_LINES_SHOWN])
    candidates = list(game.eligible_segments(tracker).filter(document=document).order_by("position"))
    if not candidates:
        return lines, set()
    # Eligible segments all have a vector row.
    vectors = corpus.vector_store(document.dataset).get(
        np.array([s.vector_row for s in candidates], dtype=np.int64)
    )
    run = tracker.training_runs.filter(state=TrainingState.SUCCEEDED).order_by("-finished_at", "-id").first()
    if run is not None and run.head_file and bucket.fetched(run.head_file).exists():
        scorer = scorer_for(run)
        ids = None
        if scorer.reads_tokens:
            ids = encoders.get_encoder(document.dataset.encoder_id or None).token_ids(
                [s.text for s in candidates]
            )
        scores = loop.Pool(vectors, token_ids=ids).scores(scorer)
    else:
        seeds = list(tracker.seeds.values_list("text", flat=True))
        if not seeds:
            return lines, set()
        seed_vecs = encoders.get_encoder(document.dataset.encoder_id or None).encode(seeds)
        scores = (vectors @ seed_vecs.T).max(axis=1)
    n = min(n, max(1, len(candidates) // 3))
    best = sorted(range(len(candidates)), key=lambda i: -float(scores[i]))[:n]
    return lines, {candidates[i].pk for i in best}


def describe_deletion(sender: type, *, obj: Any, **kwargs: Any) -> list[str]:
    """What of the game goes with a tracker, a workspace or a dataset (answers given on its texts)."""
    trackers = deletion.trackers_of(obj)
    if trackers:
        answers = Annotation.objects.filter(tracker__in=trackers).count()
        runs = TrainingRun.objects.filter(tracker__in=trackers).count()
        return [f"{answers:,} answers", f"{runs:,} training runs"]
    if isinstance(obj, Dataset):
        lost = (
            Annotation.objects.filter(segment__dataset=obj)
            .values("tracker__name")
            .annotate(n=Count("pk"))
            .order_by()
        )
        return [f"{row['n']:,} answers of tracker '{row['tracker__name']}' on its texts" for row in lost]
    return []


def files_of_deleted(sender: type, *, obj: Any, **kwargs: Any) -> list[Path]:
    """A tracker's folder (its runs' evidence and scorers, and its versions) goes with it."""
    return [Path(settings.ARTIFACT_ROOT) / "trackers" / str(t.code) for t in deletion.trackers_of(obj)]


def relocate_runs(sender: Any, *, old: dict[str, str], new: dict[str, str], **kwargs: Any) -> None:
    """After a restore under other roots: runs' head files, moved along."""
    for run in TrainingRun.objects.exclude(head_file=""):
        moved = backup.rewrite(run.head_file, old, new)
        if moved != run.head_file:
            TrainingRun.objects.filter(pk=run.pk).update(head_file=moved)
