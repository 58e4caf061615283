"""The labeling game's services: the pool a tracker draws from, rounds of cards, claims and answers."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeAlias, cast

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Min, Model, Q, QuerySet
from django.utils import timezone

from labeling.ml import loop
from labeling.ml.selection import Pick
from labeling.models import Annotation, Card, TrainingRun
from trackers import encoders, errors
from trackers.ml import documents
from trackers.models import Dataset, Granularity, Segment, Tracker, TrackerKind
from trackers.services import vector_store

if TYPE_CHECKING:
    from django.contrib.auth.models import User

CLAIM_SECONDS = 120  # a card left on screen this long goes back to the others

# A pool entry's name: (dataset id, vector row) for segment trackers, a document id for document trackers.
PoolKey: TypeAlias = "tuple[int, int] | int"
# An eligible segment as the pool reads it: pk, dataset id, vector row (eligible segments all have
# one), text, document id, document title.
PoolRow: TypeAlias = "tuple[int, int, int, str, int, str]"


class CardHeld(errors.Conflict):
    """A card another labeler is answering now."""


class LabelRejected(errors.Invalid):
    """An answer that the tracker does not accept."""


@dataclass
class Pool:
    """A tracker's candidates: one entry per distinct text (segment trackers) or per document.

    ``keys`` are (dataset, vector row) pairs for segment trackers and document ids for document
    trackers; ``segment_ids`` the segment a card shows (a document's first segment anchors its
    card). Document pools also keep their segments' vectors (``member_vectors``) and which entry
    each belongs to (``member_of``): a document's vector is the normalised mean of its segments'.
    """

    keys: Sequence[PoolKey]
    segment_ids: np.ndarray
    vectors: np.ndarray
    texts: list[str]
    member_of: np.ndarray | None = None
    member_vectors: np.ndarray | None = None
    token_ids: list[list[int]] | None = None  # segment pools: each text's token ids (n-gram features)
    # Entries from the tracker's "live traffic" dataset (what it scored in production and kept):
    # a population of their own in the estimates. None: no such entry.
    live: np.ndarray | None = None

    def live_mask(self) -> np.ndarray:
        return self.live if self.live is not None else np.zeros(len(self.keys), dtype=bool)

    def index_of(self) -> dict[PoolKey, int]:
        return {k: i for i, k in enumerate(self.keys)}

    def arrays(self) -> loop.Pool:
        pool = loop.Pool(
            vectors=self.vectors,
            member_of=self.member_of,
            member_vectors=self.member_vectors,
        )
        return pool.with_tokens(self.token_ids) if self.token_ids is not None else pool


def eligible_segments(tracker: Tracker) -> QuerySet[Segment]:
    qs = Segment.objects.filter(dataset__in=tracker.datasets.all(), vector_row__isnull=False)
    if tracker.speaker_filter:  # the spellings serving's filter keeps (``trackers.ml.documents``)
        spoken = qs.order_by().values_list("speaker", flat=True).distinct()
        qs = qs.filter(speaker__in=documents.speakers_of(spoken, tracker.speaker_filter))
    for key, value in (tracker.metadata_filter or {}).items():
        qs = qs.filter(**{f"document__metadata__{key}": value})
    return qs


def key_fields(tracker: Tracker, prefix: str = "segment__") -> tuple[str, ...]:
    """The fields that name a pool entry, from a card or an answer (or, with no prefix, a segment)."""
    if tracker.granularity == Granularity.DOCUMENT:
        return (f"{prefix}document_id",)
    return (f"{prefix}dataset_id", f"{prefix}vector_row")


def keys_of(tracker: Tracker, queryset: QuerySet[Model], prefix: str = "segment__") -> list[PoolKey]:
    rows = queryset.values_list(*key_fields(tracker, prefix))
    return [r[0] for r in rows] if tracker.granularity == Granularity.DOCUMENT else list(rows)


def _vectors(keys: list[tuple[int, int]]) -> np.ndarray:
    parts = []
    for ds in sorted({k[0] for k in keys}):
        parts.append(vector_store(Dataset.objects.get(pk=ds)).get([r for d, r in keys if d == ds]))
    return np.vstack(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def build_pool(tracker: Tracker) -> Pool:
    rows = cast(
        "QuerySet[Segment, PoolRow]",
        eligible_segments(tracker)
        .order_by("id")
        .values_list("pk", "dataset_id", "vector_row", "text", "document_id", "document__title"),
    )
    if tracker.granularity == Granularity.DOCUMENT:
        return _document_pool(rows)
    seen: dict[tuple[int, int], tuple[int, str]] = {}
    for pk, ds, row, text, _, _ in rows:
        seen.setdefault((ds, row), (pk, text))
    keys = sorted(seen)
    texts = [seen[k][1] for k in keys]
    live = set(tracker.datasets.filter(origin=Dataset.LIVE).values_list("pk", flat=True))
    return Pool(
        live=np.array([k[0] in live for k in keys], dtype=bool) if live else None,
        keys=keys,
        segment_ids=np.array([seen[k][0] for k in keys], dtype=np.int64),
        vectors=_vectors(keys),
        texts=texts,
        # Concept heads may read the texts' token n-grams (labeling.ml.training.FEATURIZERS).
        token_ids=encoders.get_encoder(_encoder_id(tracker)).token_ids(texts)
        if tracker.kind == TrackerKind.CONCEPT and texts
        else None,
    )


def _document_pool(rows: Iterable[PoolRow]) -> Pool:
    docs: dict[int, tuple[int, str]] = {}
    member_keys, member_doc = [], []
    for pk, ds, row, _, doc, title in rows:
        docs.setdefault(doc, (pk, title))
        member_keys.append((ds, row))
        member_doc.append(doc)
    keys = sorted(docs)
    where = {d: i for i, d in enumerate(keys)}
    member_of = np.array([where[d] for d in member_doc], dtype=np.int64)
    distinct = sorted(set(member_keys))
    rows_at = {k: i for i, k in enumerate(distinct)}
    if not distinct:
        return Pool([], np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32), [])
    arrays = loop.document_pool(_vectors(distinct)[[rows_at[k] for k in member_keys]], member_of, len(keys))
    return Pool(
        keys=keys,
        segment_ids=np.array([docs[d][0] for d in keys], dtype=np.int64),
        vectors=arrays.vectors,
        texts=[docs[d][1] for d in keys],
        member_of=arrays.member_of,
        member_vectors=arrays.member_vectors,
    )


def labeled_keys(tracker: Tracker) -> dict[PoolKey, list[tuple[str, datetime]]]:
    """Every non-skip answer per pool entry: {key: [(answer, updated_at), ...]}."""
    out: dict[PoolKey, list[tuple[str, datetime]]] = {}
    answers = Annotation.objects.filter(tracker=tracker).exclude(answer=Annotation.SKIP)
    for *key, answer, at in answers.values_list(*key_fields(tracker), "answer", "updated_at"):
        out.setdefault(key[0] if len(key) == 1 else tuple(key), []).append((answer, at))
    return out


def majority(answers: Sequence[tuple[str, datetime]]) -> str:
    """The most common answer; ties go to the most recent."""
    counts: dict[str, int] = {}
    for a, _ in answers:
        counts[a] = counts.get(a, 0) + 1
    top = max(counts.values())
    return max((at, a) for a, at in answers if counts[a] == top)[1]


def current_round(tracker: Tracker) -> int:
    return tracker.cards.aggregate(r=Max("round"))["r"] or 0


@dataclass
class LoopInputs:
    """Everything ``labeling.ml.loop`` needs about a tracker, read from the database once."""

    pool: Pool
    arrays: loop.Pool
    spec: loop.Spec
    answers: loop.Answers
    shown: np.ndarray
    example_vectors: np.ndarray  # every example sentence (cold-start queries)
    example_classes: np.ndarray  # each example's class in ``spec.classes`` (-1: none of them)
    typed_vectors: np.ndarray  # the examples not found in the data (concepts: 'yes' rows)
    keyword_hits: np.ndarray | None
    typed_token_ids: list[list[int]] | None = None  # their token ids, where the pool reads n-grams


def spec_of(tracker: Tracker) -> loop.Spec:
    return loop.Spec(
        kind=tracker.kind,
        labels=tuple(tracker.labels) if tracker.kind == TrackerKind.TOPIC else (),
        round_size=tracker.round_size,
        target_precision=tracker.target_precision,
    )


def answers_of(tracker: Tracker, pool: Pool, spec: loop.Spec) -> loop.Answers:
    """One row per answered pool entry, by majority over labelers (skips left out), with the
    strategy and the probability of the card that first asked about it."""
    index = pool.index_of()
    answers: dict[PoolKey, list[tuple[str, datetime]]] = {}
    drawn: dict[PoolKey, tuple[str, float | None]] = {}
    for *key, answer, at, how, probability in (
        Annotation.objects.filter(tracker=tracker)
        .exclude(answer=Annotation.SKIP)
        .order_by("created_at", "id")
        .values_list(*key_fields(tracker), "answer", "updated_at", "strategy", "card__probability")
    ):
        k: PoolKey = key[0] if len(key) == 1 else (key[0], key[1])
        answers.setdefault(k, []).append((answer, at))
        drawn.setdefault(k, (how, probability))
    rows, classes, strategies, probabilities = [], [], [], []
    for k, given in answers.items():
        c = spec.class_of(majority(given))
        if k in index and c is not None:
            rows.append(index[k])
            classes.append(c)
            strategies.append(drawn[k][0])
            probabilities.append(np.nan if drawn[k][1] is None else drawn[k][1])
    order = np.argsort(rows, kind="stable")
    return loop.Answers(
        np.asarray(rows, dtype=np.int64)[order],
        np.asarray(classes, dtype=np.int64)[order],
        np.asarray(strategies, dtype="<U16")[order] if rows else np.zeros(0, dtype="<U16"),
        np.asarray(probabilities, dtype=np.float64)[order],
    )


def loop_inputs(tracker: Tracker) -> LoopInputs:
    pool = build_pool(tracker)
    spec = spec_of(tracker)
    index = pool.index_of()
    shown = np.array(
        sorted({index[k] for k in keys_of(tracker, tracker.cards.all()) if k in index}), dtype=np.int64
    )
    dim = pool.vectors.shape[1] if len(pool.keys) else 0
    seeds = list(tracker.seeds.all())
    texts = [s.text for s in seeds]
    vectors = (
        np.asarray(encoders.get_encoder(_encoder_id(tracker)).encode(texts), dtype=np.float32)
        if texts
        else np.zeros((0, dim), dtype=np.float32)
    )
    typed = [i for i, s in enumerate(seeds) if s.segment_id is None]  # not found in the data
    # Typed examples train as 'yes' rows of segment concept trackers (a sentence is no document).
    typed_rows = spec.kind == TrackerKind.CONCEPT and tracker.granularity == Granularity.SEGMENT
    hits = None
    if tracker.keywords:
        q = Q()
        for kw in tracker.keywords:
            q |= Q(text__icontains=kw)
        hit_keys = set(keys_of(tracker, eligible_segments(tracker).filter(q)[:2000], prefix=""))
        hits = np.array(sorted(index[k] for k in hit_keys if k in index), dtype=np.int64)
    return LoopInputs(
        pool=pool,
        arrays=pool.arrays(),
        spec=spec,
        answers=answers_of(tracker, pool, spec),
        shown=shown,
        example_vectors=vectors,
        example_classes=np.asarray(
            [c if (c := spec.class_of(s.label)) is not None else -1 for s in seeds], dtype=np.int64
        ),
        typed_vectors=vectors[typed] if typed_rows else vectors[:0],
        typed_token_ids=encoders.get_encoder(_encoder_id(tracker)).token_ids([texts[i] for i in typed])
        if typed_rows and pool.token_ids is not None
        else None,
        keyword_hits=hits,
    )


def selection_rng(seed: int | None, round_no: int) -> np.random.Generator:
    """The random part of a round's choice: ``seed``, else ``TRACKERS_SELECTION_SEED`` with the round
    number (every round of a tracker reproducible), else fresh entropy."""
    if seed is None and settings.SELECTION_SEED is not None:
        return np.random.default_rng([settings.SELECTION_SEED, round_no])
    return np.random.default_rng(seed)


def fill_review_round(
    tracker: Tracker,
    *,
    scores: np.ndarray,
    threshold: float,
    training_run: TrainingRun,
    inputs: LoopInputs,
    seed: int | None = None,
) -> list[Card]:
    """Queue a round of the tracker's live texts (``labeling.ml.loop.plan_review``) from ``scores``
    of the pool by the live model at its threshold in use. Texts already answered, on a card, or
    the same as an answered text (in any of the tracker's datasets) are not asked again."""
    live = inputs.pool.live_mask()
    answered_texts = set(
        Annotation.objects.filter(tracker=tracker).values_list("segment__text_hash", flat=True)
    )
    twins = np.array(
        [i for i in np.flatnonzero(live) if _sha1(inputs.pool.texts[i]) in answered_texts], dtype=np.int64
    )
    round_no = current_round(tracker) + 1
    picks = loop.plan_review(
        inputs.answers,
        shown=np.union1d(inputs.shown, twins),
        within=live,
        scores=scores,
        threshold=threshold,
        size=tracker.round_size,
        rng=selection_rng(seed, round_no),
    )
    return _queue(tracker, inputs, picks, round_no, scores, None, training_run)


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - a segment's text key, as imports make it


def fill_check_round(
    tracker: Tracker,
    *,
    scores: np.ndarray,
    threshold: float,
    training_run: TrainingRun,
    inputs: LoopInputs | None = None,
    seed: int | None = None,
) -> list[Card]:
    """Queue a round that checks what a concept tracker misses (``labeling.ml.loop.plan_check``), from
    ``scores`` of the pool by the model being checked, at its threshold in use."""
    inputs = inputs or loop_inputs(tracker)
    round_no = current_round(tracker) + 1
    picks = loop.plan_check(
        inputs.answers,
        shown=inputs.shown,
        scores=scores,
        threshold=threshold,
        rng=selection_rng(seed, round_no),
    )
    return _queue(tracker, inputs, picks, round_no, scores, None, training_run)


def _queue(
    tracker: Tracker,
    inputs: LoopInputs,
    picks: list[Pick],
    round_no: int,
    scores: np.ndarray | None,
    predicted: list[str] | None,
    training_run: TrainingRun | None,
) -> list[Card]:
    cards = [
        Card(
            tracker=tracker,
            segment_id=int(inputs.pool.segment_ids[p.index]),
            round=round_no,
            strategy=p.strategy,
            score=float(scores[p.index]) if scores is not None else None,
            label=predicted[p.index] if predicted is not None else "",
            probability=p.probability,
            training_run=training_run,
        )
        for p in picks
    ]
    Card.objects.bulk_create(cards, ignore_conflicts=True)
    return list(tracker.cards.filter(round=round_no))


def fill_round(
    tracker: Tracker,
    *,
    inputs: LoopInputs | None = None,
    trained: loop.Trained | None = None,
    threshold: float | None = None,
    training_run: TrainingRun | None = None,
    seed: int | None = None,
) -> list[Card]:
    """Queue the next round of cards, chosen by ``labeling.ml.loop.plan_round``.

    With a trained head: from its scores at ``threshold`` (the threshold in use); without one: the
    fallback (neighbours of the examples and of the 'yes' answers, keywords, random texts).
    """
    inputs = inputs or loop_inputs(tracker)
    if not inputs.pool.keys:
        return []
    round_no = current_round(tracker) + 1
    picks = loop.plan_round(
        inputs.arrays,
        inputs.answers,
        inputs.spec,
        shown=inputs.shown,
        trained=trained,
        threshold=threshold,
        example_vectors=inputs.example_vectors,
        example_classes=inputs.example_classes,
        keyword_hits=inputs.keyword_hits,
        rng=selection_rng(seed, round_no),
    )
    scores, predicted = None, None
    if trained is not None and trained.scores is not None:
        if trained.scores.ndim == 2:  # a topic head: the most likely label, with its probability
            names = list(getattr(trained.head, "labels", []))
            scores = trained.scores.max(axis=1)
            predicted = [names[i] if i < len(names) else "" for i in trained.scores.argmax(axis=1).tolist()]
        else:
            scores = trained.scores
    _queue(tracker, inputs, picks, round_no, scores, predicted, training_run)
    return list(tracker.cards.filter(round=round_no))


def unshown_count(tracker: Tracker) -> int:
    """Pool entries never put on a card nor answered: what later rounds can still draw from.

    Counted from the database alone (the game polls it while waiting): no vector is read.
    """
    entries = set(keys_of(tracker, eligible_segments(tracker), prefix=""))
    used = set(keys_of(tracker, tracker.cards.all())) | set(labeled_keys(tracker))
    return len(entries - used)


def _encoder_id(tracker: Tracker) -> str | None:
    ids = set(tracker.datasets.values_list("encoder_id", flat=True)) - {""}
    return ids.pop() if len(ids) == 1 else None


def open_cards(tracker: Tracker) -> QuerySet[Card]:
    return tracker.cards.filter(answered_at__isnull=True)


def held_by_another(card: Card, user: User) -> bool:
    """True while someone else's claim on this unanswered card is live."""
    return bool(
        card.answered_at is None
        and card.claimed_by_id not in (None, user.pk)
        and card.claimed_until
        and card.claimed_until > timezone.now()
    )


def claim_cards(tracker: Tracker, user: User, n: int = 2) -> list[Card]:
    """Up to ``n`` unanswered cards for ``user``: theirs first, then free or expired ones, claimed by compare-and-set."""
    now = timezone.now()
    until = now + timedelta(seconds=CLAIM_SECONDS)
    mine = list(
        open_cards(tracker)
        .filter(claimed_by=user, claimed_until__gte=now)
        .order_by("claimed_until", "id")[:n]
    )
    free = Q(claimed_until__isnull=True) | Q(claimed_until__lt=now) | Q(claimed_by=user)
    for card in (
        open_cards(tracker).filter(free).exclude(pk__in=[c.pk for c in mine]).order_by("round", "id")[: n * 4]
    ):
        if len(mine) >= n:
            break
        # Two labelers may race for the same card: only one update matches.
        if Card.objects.filter(free, pk=card.pk, answered_at__isnull=True).update(
            claimed_by=user, claimed_until=until
        ):
            card.claimed_by, card.claimed_until = user, until
            mine.append(card)
    return mine


def record_label(
    tracker: Tracker,
    user: User,
    *,
    segment: Segment,
    answer: str,
    card: Card | None = None,
    strategy: str = "",
) -> tuple[Annotation, bool]:
    """Store ``user``'s answer for ``segment``; the same answer twice is one row (a double press).

    ``strategy`` says where an answer given without a card came from (feedback on scored results)."""
    if answer not in [*tracker.answers, Annotation.SKIP]:
        raise LabelRejected(
            f"'{answer}' is not an answer of this tracker; expected one of {', '.join(tracker.answers)} or skip"
        )
    now = timezone.now()
    card = card or Card.objects.filter(tracker=tracker, segment=segment).first()
    existing = Annotation.objects.filter(tracker=tracker, segment=segment, annotator=user).first()
    if existing is not None and existing.answer == answer:
        return existing, False  # a repeat (double press, retried request) changes nothing
    defaults = {
        "answer": answer,
        "updated_at": now,
        "card": card,
        "strategy": strategy or (card.strategy if card else ""),
        "training_run": card.training_run if card else None,
    }
    with transaction.atomic():
        try:
            annotation, created = Annotation.objects.update_or_create(
                tracker=tracker, segment=segment, annotator=user, defaults=defaults
            )
        except IntegrityError:  # a concurrent duplicate of this very answer won the insert
            annotation, created = (
                Annotation.objects.get(tracker=tracker, segment=segment, annotator=user),
                False,
            )
        if card is not None:
            Card.objects.filter(pk=card.pk, answered_at__isnull=True).update(answered_at=now)
    return annotation, created


def undo_last(tracker: Tracker, user: User) -> Card | None:
    """Take back ``user``'s latest answer and put its card back in front of them."""
    last = Annotation.objects.filter(tracker=tracker, annotator=user).order_by("-updated_at", "-id").first()
    if last is None:
        return None
    with transaction.atomic():
        card = last.card
        last.delete()
        if card is not None:
            # Claims are served oldest first: make this one the oldest of the labeler's open cards.
            until = timezone.now() + timedelta(seconds=CLAIM_SECONDS)
            held = open_cards(tracker).filter(claimed_by=user, claimed_until__gte=timezone.now())
            first = held.aggregate(m=Min("claimed_until"))["m"]
            if first is not None:
                until = min(until, first - timedelta(milliseconds=1))
            Card.objects.filter(pk=card.pk).update(answered_at=None, claimed_by=user, claimed_until=until)
            card.refresh_from_db()
    return card


def round_progress(tracker: Tracker, round_no: int | None = None) -> dict[str, int]:
    r = round_no or current_round(tracker)
    counts = tracker.cards.filter(round=r).aggregate(
        total=Count("id"), done=Count("id", filter=Q(answered_at__isnull=False))
    )
    return {"round": r, "answered": counts["done"], "size": counts["total"]}


def label_watermark(tracker: Tracker) -> str:
    """A fingerprint of the tracker's answers: training for the same answers is one run."""
    agg = Annotation.objects.filter(tracker=tracker).aggregate(
        n=Count("id"), last=Max("updated_at"), top=Max("id")
    )
    return hashlib.sha1(f"{agg['n']}:{agg['last']}:{agg['top']}".encode()).hexdigest()


def disagreements(tracker: Tracker) -> QuerySet[Annotation, Mapping[str, object]]:
    """Segments whose labelers gave different (non-skip) answers."""
    return (
        Annotation.objects.filter(tracker=tracker)
        .exclude(answer=Annotation.SKIP)
        .values("segment")
        .annotate(kinds=Count("answer", distinct=True))
        .filter(kinds__gt=1)
        .values("segment")
    )


def resolve(tracker: Tracker, segment: Segment, answer: str) -> int:
    """Settle a disagreement: every labeler's answer on ``segment`` becomes ``answer``."""
    if answer not in tracker.answers:
        raise LabelRejected(
            f"'{answer}' is not an answer of this tracker; expected one of {', '.join(tracker.answers)}"
        )
    return Annotation.objects.filter(tracker=tracker, segment=segment).update(
        answer=answer, updated_at=timezone.now()
    )
