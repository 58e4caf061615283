"""The labeling game's services: the pool a tracker draws from, rounds of cards, claims and answers."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Min, Q
from django.utils import timezone

from labeling.ml.selection import cold_start, next_round
from labeling.models import Annotation, Card
from trackers import encoders
from trackers.models import Dataset, Segment, Tracker
from trackers.services import vector_store

CLAIM_SECONDS = 120  # a card left on screen this long goes back to the others


class LabelRejected(ValueError):
    """An answer that the tracker does not accept."""


@dataclass
class Pool:
    """A tracker's candidates: one entry per distinct text (dataset, vector row)."""

    keys: list[tuple[int, int]]
    segment_ids: np.ndarray
    vectors: np.ndarray
    texts: list[str]

    def index_of(self) -> dict[tuple[int, int], int]:
        return {k: i for i, k in enumerate(self.keys)}


def eligible_segments(tracker: Tracker):
    qs = Segment.objects.filter(dataset__in=tracker.datasets.all(), vector_row__isnull=False)
    if tracker.speaker_filter:
        qs = qs.filter(speaker__iexact=tracker.speaker_filter)
    for key, value in (tracker.metadata_filter or {}).items():
        qs = qs.filter(**{f"document__metadata__{key}": value})
    return qs


def build_pool(tracker: Tracker) -> Pool:
    seen: dict[tuple[int, int], tuple[int, str]] = {}
    for pk, ds, row, text in (
        eligible_segments(tracker).order_by("id").values_list("pk", "dataset_id", "vector_row", "text")
    ):
        seen.setdefault((ds, row), (pk, text))
    keys = sorted(seen)
    vectors = np.zeros((len(keys), 0), dtype=np.float32)
    parts = []
    for ds in sorted({k[0] for k in keys}):
        rows = [r for d, r in keys if d == ds]
        parts.append(vector_store(Dataset.objects.get(pk=ds)).get(rows))
    if parts:
        vectors = np.vstack(parts)
    return Pool(
        keys=keys,
        segment_ids=np.array([seen[k][0] for k in keys], dtype=np.int64),
        vectors=vectors,
        texts=[seen[k][1] for k in keys],
    )


def labeled_keys(tracker: Tracker) -> dict[tuple[int, int], list[tuple[str, object]]]:
    """Every non-skip answer per distinct text: {(dataset, row): [(answer, updated_at), ...]}."""
    out: dict[tuple[int, int], list] = {}
    for ds, row, answer, at in (
        Annotation.objects.filter(tracker=tracker)
        .exclude(answer=Annotation.SKIP)
        .values_list("segment__dataset_id", "segment__vector_row", "answer", "updated_at")
    ):
        out.setdefault((ds, row), []).append((answer, at))
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
    carded = set(tracker.cards.values_list("segment__dataset_id", "segment__vector_row"))
    taken |= {index[k] for k in carded if k in index}
    rng = np.random.default_rng(seed)
    exclude = np.fromiter(taken, dtype=np.int64)
    if scorer is None:
        seeds = list(tracker.seeds.values_list("text", flat=True))
        seed_vecs = (
            encoders.get_encoder(_encoder_id(tracker)).encode(seeds)
            if seeds
            else np.zeros((0, pool.vectors.shape[1]))
        )
        hits = None
        if tracker.keywords:
            q = Q()
            for kw in tracker.keywords:
                q |= Q(text__icontains=kw)
            hit_keys = set(
                eligible_segments(tracker).filter(q).values_list("dataset_id", "vector_row")[:2000]
            )
            hits = np.array([index[k] for k in hit_keys if k in index], dtype=np.int64)
        picks = cold_start(
            pool.vectors, seed_vecs, size=tracker.round_size, rng=rng, exclude=exclude, keyword_hits=hits
        )
        scores = None
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
