"""The labeling game's services: the pool a tracker draws from, rounds of cards, claims and answers."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Min, Q
from django.utils import timezone

from labeling.ml.selection import cold_start, next_round, topic_round
from labeling.models import Annotation, Card
from trackers import encoders
from trackers.models import Dataset, Granularity, Segment, Tracker
from trackers.services import vector_store

CLAIM_SECONDS = 120  # a card left on screen this long goes back to the others


class LabelRejected(ValueError):
    """An answer that the tracker does not accept."""


@dataclass
class Pool:
    """A tracker's candidates: one entry per distinct text (segment trackers) or per document.

    ``keys`` are (dataset, vector row) pairs for segment trackers and document ids for document
    trackers; ``segment_ids`` the segment a card shows (a document's first segment anchors its
    card). Document pools also keep their segments' vectors (``member_vectors``) and which entry
    each belongs to (``member_of``): a document's vector is the normalised mean of its segments'.
    """

    keys: list
    segment_ids: np.ndarray
    vectors: np.ndarray
    texts: list[str]
    member_of: np.ndarray | None = None
    member_vectors: np.ndarray | None = None

    def index_of(self) -> dict:
        return {k: i for i, k in enumerate(self.keys)}

    def member_max(self, sims: np.ndarray) -> np.ndarray:
        """Per pool entry, the highest of its segments' values in ``sims`` (segments × columns)."""
        if self.member_of is None:
            return sims
        out = np.full((len(self.keys), sims.shape[1]), -np.inf, dtype=np.float32)
        np.maximum.at(out, self.member_of, sims)
        return out


def eligible_segments(tracker: Tracker):
    qs = Segment.objects.filter(dataset__in=tracker.datasets.all(), vector_row__isnull=False)
    if tracker.speaker_filter:
        qs = qs.filter(speaker__iexact=tracker.speaker_filter)
    for key, value in (tracker.metadata_filter or {}).items():
        qs = qs.filter(**{f"document__metadata__{key}": value})
    return qs


def key_fields(tracker: Tracker, prefix: str = "segment__") -> tuple[str, ...]:
    """The fields that name a pool entry, from a card or an answer (or, with no prefix, a segment)."""
    if tracker.granularity == Granularity.DOCUMENT:
        return (f"{prefix}document_id",)
    return (f"{prefix}dataset_id", f"{prefix}vector_row")


def keys_of(tracker: Tracker, queryset, prefix: str = "segment__") -> list:
    rows = queryset.values_list(*key_fields(tracker, prefix))
    return [r[0] for r in rows] if tracker.granularity == Granularity.DOCUMENT else list(rows)


def _vectors(keys: list[tuple[int, int]]) -> np.ndarray:
    parts = []
    for ds in sorted({k[0] for k in keys}):
        parts.append(vector_store(Dataset.objects.get(pk=ds)).get([r for d, r in keys if d == ds]))
    return np.vstack(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def build_pool(tracker: Tracker) -> Pool:
    rows = (
        eligible_segments(tracker)
        .order_by("id")
        .values_list("pk", "dataset_id", "vector_row", "text", "document_id", "document__title")
    )
    if tracker.granularity == Granularity.DOCUMENT:
        return _document_pool(rows)
    seen: dict[tuple[int, int], tuple[int, str]] = {}
    for pk, ds, row, text, _, _ in rows:
        seen.setdefault((ds, row), (pk, text))
    keys = sorted(seen)
    return Pool(
        keys=keys,
        segment_ids=np.array([seen[k][0] for k in keys], dtype=np.int64),
        vectors=_vectors(keys),
        texts=[seen[k][1] for k in keys],
    )


def _document_pool(rows) -> Pool:
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
    member_vectors = _vectors(distinct)[[rows_at[k] for k in member_keys]] if distinct else None
    if member_vectors is None:
        return Pool([], np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32), [])
    sums = np.zeros((len(keys), member_vectors.shape[1]), dtype=np.float32)
    np.add.at(sums, member_of, member_vectors)
    vectors = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return Pool(
        keys=keys,
        segment_ids=np.array([docs[d][0] for d in keys], dtype=np.int64),
        vectors=vectors.astype(np.float32),
        texts=[docs[d][1] for d in keys],
        member_of=member_of,
        member_vectors=member_vectors,
    )


def labeled_keys(tracker: Tracker) -> dict:
    """Every non-skip answer per pool entry: {key: [(answer, updated_at), ...]}."""
    out: dict = {}
    answers = Annotation.objects.filter(tracker=tracker).exclude(answer=Annotation.SKIP)
    for *key, answer, at in answers.values_list(*key_fields(tracker), "answer", "updated_at"):
        out.setdefault(key[0] if len(key) == 1 else tuple(key), []).append((answer, at))
    return out


def majority(answers: list[tuple[str, object]]) -> str:
    """The most common answer; ties go to the most recent."""
    counts: dict[str, int] = {}
    for a, _ in answers:
        counts[a] = counts.get(a, 0) + 1
    top = max(counts.values())
    return max((at, a) for a, at in answers if counts[a] == top)[1]


def current_round(tracker: Tracker) -> int:
    return tracker.cards.aggregate(r=Max("round"))["r"] or 0


def fill_round(tracker: Tracker, *, scorer=None, training_run=None, seed: int | None = None) -> list[Card]:
    """Queue the next round of cards: cold start from the seeds, or the mix from the model's scores."""
    pool = build_pool(tracker)
    if not pool.keys:
        return []
    index = pool.index_of()
    taken = {index[k] for k in labeled_keys(tracker) if k in index}
    taken |= {index[k] for k in keys_of(tracker, tracker.cards.all()) if k in index}
    rng = np.random.default_rng(seed)
    exclude = np.fromiter(taken, dtype=np.int64)
    scores = None
    if scorer is None:
        seeds = list(tracker.seeds.values_list("text", flat=True))
        seed_vecs = (
            encoders.get_encoder(_encoder_id(tracker)).encode(seeds)
            if seeds
            else np.zeros((0, pool.vectors.shape[1]), dtype=np.float32)
        )
        hits = None
        if tracker.keywords:
            q = Q()
            for kw in tracker.keywords:
                q |= Q(text__icontains=kw)
            hit_keys = set(keys_of(tracker, eligible_segments(tracker).filter(q)[:2000], prefix=""))
            hits = np.array([index[k] for k in hit_keys if k in index], dtype=np.int64)
        seed_sims = None
        if pool.member_vectors is not None and len(seed_vecs):
            # A document is near a seed when one of its lines is: a mean over a whole call blurs it.
            seed_sims = pool.member_max(pool.member_vectors @ np.asarray(seed_vecs, dtype=np.float32).T)
        picks = cold_start(
            pool.vectors,
            seed_vecs,
            size=tracker.round_size,
            rng=rng,
            exclude=exclude,
            keyword_hits=hits,
            seed_sims=seed_sims,
        )
    elif scorer.is_topic:
        proba = scorer.probabilities(pool.vectors, pool.texts)
        scores = proba.max(axis=1)
        picks = topic_round(pool.vectors, proba, size=tracker.round_size, rng=rng, exclude=exclude)
    else:
        scores = scorer.score(pool.vectors, pool.texts)
        picks = next_round(
            pool.vectors, scores, scorer.threshold, size=tracker.round_size, rng=rng, exclude=exclude
        )
    round_no = current_round(tracker) + 1
    cards = [
        Card(
            tracker=tracker,
            segment_id=int(pool.segment_ids[p.index]),
            round=round_no,
            strategy=p.strategy,
            score=float(scores[p.index]) if scores is not None else None,
            training_run=training_run,
        )
        for p in picks
    ]
    Card.objects.bulk_create(cards, ignore_conflicts=True)
    return list(tracker.cards.filter(round=round_no))


def _encoder_id(tracker: Tracker) -> str | None:
    ids = set(tracker.datasets.values_list("encoder_id", flat=True))
    return ids.pop() if len(ids) == 1 else None


def open_cards(tracker: Tracker):
    return tracker.cards.filter(answered_at__isnull=True)


def held_by_another(card: Card, user) -> bool:
    """True while someone else's claim on this unanswered card is live."""
    return bool(
        card.answered_at is None
        and card.claimed_by_id not in (None, user.pk)
        and card.claimed_until
        and card.claimed_until > timezone.now()
    )


def claim_cards(tracker: Tracker, user, n: int = 2) -> list[Card]:
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
    tracker: Tracker, user, *, segment: Segment, answer: str, card: Card | None = None
) -> tuple[Annotation, bool]:
    """Store ``user``'s answer for ``segment``; the same answer twice is one row (a double press)."""
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
        "strategy": card.strategy if card else "",
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


def undo_last(tracker: Tracker, user) -> Card | None:
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


def round_progress(tracker: Tracker, round_no: int | None = None) -> dict:
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


def answer_card(tracker: Tracker, user, card: Card, answer: str) -> tuple[Annotation, bool]:
    """Record an answer to a card; when it completes the round, ask for training (which queues the next)."""
    from serving.services import request_training

    annotation, created = record_label(tracker, user, segment=card.segment, answer=answer, card=card)
    if created and not open_cards(tracker).exists():
        request_training(tracker)
    return annotation, created


def disagreements(tracker: Tracker):
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
