"""Which segments to show next: pure numpy over L2-normalised vectors.

Round 1 (cold start): nearest neighbours of the seed sentences, taken in turn from each seed so
every seed is represented, plus keyword matches and a random sample (its share is the caller's:
``labeling.ml.loop.COLD_START_RANDOM_SHARE``).
Later rounds, ``DEFAULT_MIX``:
- ``uncertain`` (60%): scores nearest the decision threshold, most uncertain first, skipping any
  card within cosine ``SAME_QUESTION`` of one already in the round (no question asked twice);
- ``positive`` (25%): a uniform sample of the unlabeled segments scoring at or above the
  threshold, to confirm positives (uniform, not the very top, so their answers estimate precision
  without bias); never below the threshold: when fewer score that high, the rest of the round is
  uncertain and random cards;
- ``random`` (15%): a uniform sample of the unlabeled pool; with the labeled predicted
  positives it gives the unbiased estimates of precision and recall.
Every pick skips near-duplicates (cosine above ``NEAR_DUPLICATE``) of a card already in the round.

Topic trackers (``topic_round``) use the same mix over class probabilities: ``uncertain`` are the
smallest margins between the two likeliest labels, ``positive`` a uniform sample of each label's
predicted members taken in turn over the labels (so rare labels get confirmed too), ``random`` as
above.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEAR_DUPLICATE = 0.97
SAME_QUESTION = 0.9  # uncertain cards this similar to one already in the round ask the same thing
DEFAULT_MIX = {"uncertain": 0.6, "positive": 0.25, "random": 0.15}


@dataclass(frozen=True)
class Pick:
    index: int
    strategy: str


class _Round:
    """Accumulates picks, refusing repeats and near-duplicates of cards already chosen."""

    def __init__(self, vectors: np.ndarray, available: np.ndarray, size: int):
        self.vectors = vectors
        self.available = available.copy()
        self.size = size
        self.picks: list[Pick] = []
        self._chosen: list[np.ndarray] = []

    @property
    def full(self) -> bool:
        return len(self.picks) >= self.size

    def add(self, index: int, strategy: str, min_distinct: float = NEAR_DUPLICATE) -> bool:
        if self.full or not self.available[index]:
            return False
        v = self.vectors[index]
        if self._chosen and float(np.max(np.stack(self._chosen) @ v)) > min_distinct:
            if min_distinct >= NEAR_DUPLICATE:
                self.available[index] = False
            return False
        self.available[index] = False
        self._chosen.append(v)
        self.picks.append(Pick(int(index), strategy))
        return True

    def take(self, ordered: np.ndarray, strategy: str, n: int, min_distinct: float = NEAR_DUPLICATE) -> None:
        goal = min(self.size, len(self.picks) + n)
        for i in ordered:
            if len(self.picks) >= goal:
                break
            self.add(int(i), strategy, min_distinct)

    def take_random(self, rng: np.random.Generator, n: int, strategy: str = "random") -> None:
        self.take(rng.permutation(np.flatnonzero(self.available)), strategy, n)


def _available(n: int, exclude: np.ndarray | None) -> np.ndarray:
    mask = np.ones(n, dtype=bool)
    if exclude is not None and len(exclude):
        mask[np.asarray(exclude, dtype=np.int64)] = False
    return mask


def cold_start(
    vectors: np.ndarray,
    seed_vectors: np.ndarray,
    *,
    size: int,
    rng: np.random.Generator,
    exclude: np.ndarray | None = None,
    keyword_hits: np.ndarray | None = None,
    random_share: float = 0.2,
    seed_sims: np.ndarray | None = None,
) -> list[Pick]:
    """The first round: seeds' neighbours (round-robin over seeds), keyword matches, random.

    ``seed_sims`` (n, seeds) replaces the cosine of ``vectors`` to the seeds where nearness is
    measured otherwise (documents: their closest line).
    """
    rnd = _Round(vectors, _available(len(vectors), exclude), size)
    n_random = max(1, round(size * random_share)) if size > 1 else 0
    n_keyword = min(len(keyword_hits) if keyword_hits is not None else 0, size // 5)
    n_neighbours = size - n_random - n_keyword
    if len(seed_vectors):
        sims = seed_sims if seed_sims is not None else vectors @ np.asarray(seed_vectors, dtype=np.float32).T
        depth = min(len(vectors), n_neighbours * 4 + 8)
        ranked = np.argsort(-sims, axis=0)[:depth]  # each seed's nearest, best first
        goal = len(rnd.picks) + n_neighbours
        for row in ranked:
            for i in row:
                if len(rnd.picks) >= goal:
                    break
                rnd.add(int(i), "seed_neighbour")
    if n_keyword and keyword_hits is not None:
        rnd.take(rng.permutation(np.asarray(keyword_hits)), "keyword", n_keyword)
    rnd.take_random(rng, size - len(rnd.picks))
    return rnd.picks


def _mixed_round(
    vectors: np.ndarray, size: int, exclude: np.ndarray | None, mix: dict[str, float] | None
) -> tuple[_Round, np.ndarray, int, int]:
    """An empty round, the indices still available, and how many uncertain / positive cards to take."""
    mix = mix or DEFAULT_MIX
    rnd = _Round(vectors, _available(len(vectors), exclude), size)
    return (
        rnd,
        np.flatnonzero(rnd.available),
        round(size * mix.get("uncertain", 0)),
        round(size * mix.get("positive", 0)),
    )


def next_round(
    vectors: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    *,
    size: int,
    rng: np.random.Generator,
    exclude: np.ndarray | None = None,
    mix: dict[str, float] | None = None,
) -> list[Pick]:
    """A later round from the current model's scores; see the module docstring for the mix."""
    rnd, avail, n_unc, n_pos = _mixed_round(vectors, size, exclude, mix)
    if n_unc and len(avail):
        by_doubt = avail[np.argsort(np.abs(scores[avail] - threshold))]
        rnd.take(by_doubt, "uncertain", n_unc, min_distinct=SAME_QUESTION)
    if n_pos:
        avail = np.flatnonzero(rnd.available)
        rnd.take(rng.permutation(avail[scores[avail] >= threshold]), "positive", n_pos)
    missing = n_unc + n_pos - len(rnd.picks)  # too few predicted matches: ask where the model hesitates
    if missing > 0:
        avail = np.flatnonzero(rnd.available)
        rnd.take(avail[np.argsort(np.abs(scores[avail] - threshold))], "uncertain", missing, SAME_QUESTION)
    rnd.take_random(rng, size - len(rnd.picks))
    return rnd.picks


def topic_round(
    vectors: np.ndarray,
    probabilities: np.ndarray,
    *,
    size: int,
    rng: np.random.Generator,
    exclude: np.ndarray | None = None,
    mix: dict[str, float] | None = None,
) -> list[Pick]:
    """A later round of a topic tracker from its (n, labels) probabilities."""
    rnd, avail, n_unc, n_pos = _mixed_round(vectors, size, exclude, mix)
    if n_unc and len(avail):
        top2 = -np.sort(-probabilities[avail], axis=1)[:, :2]
        margin = top2[:, 0] - (top2[:, 1] if top2.shape[1] > 1 else 0.0)
        rnd.take(avail[np.argsort(margin, kind="stable")], "uncertain", n_unc, min_distinct=SAME_QUESTION)
    if n_pos:
        avail = np.flatnonzero(rnd.available)
        predicted = np.argmax(probabilities[avail], axis=1)
        queues = {c: iter(rng.permutation(avail[predicted == c])) for c in range(probabilities.shape[1])}
        goal = min(size, len(rnd.picks) + n_pos)
        while len(rnd.picks) < goal and queues:
            for c in list(queues):
                if len(rnd.picks) >= goal:
                    break
                if not any(rnd.add(int(i), "positive") for i in queues[c]):
                    del queues[c]  # this label has no more predicted members to show
    rnd.take_random(rng, size - len(rnd.picks))
    return rnd.picks
