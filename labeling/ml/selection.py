"""Which segments to show next: pure numpy over L2-normalised vectors.

Round 1 (cold start): nearest neighbours of the seed sentences, taken in turn from each seed so
every seed is represented, plus keyword matches and a random sample (its share is the caller's:
``labeling.ml.loop.COLD_START_RANDOM_SHARE``).
Later rounds of a concept tracker are one draw **with known probabilities** (``next_round``): every
unanswered text gets a share of the round, the sum of three parts of ``DEFAULT_MIX``:
- ``uncertain`` (60%): by the text's rank in the order of |score − threshold|, weight
  1 / (1 + (rank / ``RANK_SCALE``)²): heavy-tailed, so the texts nearest the threshold are asked
  most often, and every text below or above it keeps a chance;
- ``positive`` (25%): uniform over the texts scoring at or above the threshold (confirms matches;
  with none there, its share goes to ``uncertain``);
- ``random`` (15%): uniform over all of them.
The round is a systematic draw in that order: each text's chance of being on a card is its share
times the round's size (capped at 1), exactly, and is kept with the card (``Pick.probability``), so
the estimates can weight each answer by how it was drawn (``labeling.ml.estimates``). A card's
strategy is the part that gave the text most of its share. Near-twins are not kept apart: leaving out
texts within cosine 0.9 of one nearer the threshold cost 0.02–0.025 F1 on two of three Banking77
intents in ``make simulate``. ``check_round`` is the same draw on the band just below the threshold,
where a rare concept's missed matches are.

Topic trackers (``topic_round``) use the same mix over class probabilities: ``uncertain`` are the
smallest margins between the two likeliest labels, ``positive`` a uniform sample of each label's
predicted members taken in turn over the labels (so rare labels get confirmed too), ``random`` as
above. Picks in these rounds skip near-duplicates (cosine above ``NEAR_DUPLICATE``) of a card
already in the round; their probabilities are 1 (chosen outright) or, for random picks, the share
of the texts left that the round took.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

NEAR_DUPLICATE = 0.97
SAME_QUESTION = (
    0.9  # topic rounds: uncertain cards this similar to one already in the round ask the same thing
)
DEFAULT_MIX = {"uncertain": 0.6, "positive": 0.25, "random": 0.15}
RANK_SCALE = 15.0  # the uncertain part's weight halves at this rank from the threshold
# A check round (``check_round``): most of it from the band just below the threshold, the rest
# further below; the band's weight by rank as above, over a wider scale.
CHECK_MIX = {"below_near": 0.8, "below_far": 0.2}
CHECK_RANK_SCALE = 60.0


@dataclass(frozen=True)
class Pick:
    index: int
    strategy: str
    # The chance this text had of being on a card of its round, given what was answered before:
    # exact for draws with known probabilities; 1 for texts chosen outright (neighbours of examples,
    # the most uncertain topic cards).
    probability: float = 1.0


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
        free = np.flatnonzero(self.available)
        before = len(self.picks)
        self.take(rng.permutation(free), strategy, n)
        share = (len(self.picks) - before) / len(free) if len(free) else 1.0
        for k in range(before, len(self.picks)):
            self.picks[k] = Pick(self.picks[k].index, strategy, share)


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


def inclusion(shares: np.ndarray, n: int) -> np.ndarray:
    """Each entry's chance of being among ``n`` drawn in proportion to ``shares``: ``n`` × its
    share, where the largest, that would pass 1, are taken outright (probability 1) and the rest
    shared again."""
    shares = np.asarray(shares, dtype=np.float64)
    n = min(n, int(np.sum(shares > 0)))
    pi = np.zeros(len(shares))
    certain = np.zeros(len(shares), dtype=bool)
    while n - certain.sum() > 0:
        rest = ~certain & (shares > 0)
        pi[rest] = (n - certain.sum()) * shares[rest] / shares[rest].sum()
        over = rest & (pi >= 1)
        if not over.any():
            break
        certain |= over
        pi[certain] = 1.0
    pi[certain] = 1.0
    return pi


def systematic(pi: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positions drawn by a systematic sample in the given order: each with probability ``pi``
    (which sum to a whole number, each at most 1), spread evenly along the order."""
    cum = np.cumsum(pi)
    if not len(cum):
        return np.zeros(0, dtype=np.int64)
    points = np.minimum(rng.uniform() + np.arange(round(float(cum[-1]))), cum[-1] - 1e-12)
    return np.unique(np.searchsorted(cum, points, side="right"))


def _rank_weights(n: int, scale: float) -> np.ndarray:
    rank = np.arange(n, dtype=np.float64)
    weights: np.ndarray = 1.0 / (1.0 + (rank / scale) ** 2)
    return weights


def _draw(order: np.ndarray, parts: dict[str, np.ndarray], size: int, rng: np.random.Generator) -> list[Pick]:
    """``size`` of ``order`` drawn with probability ∝ the sum of ``parts`` (each a share per entry of
    ``order``, summing to that part's share of the round), systematically in that order."""
    names = list(parts)
    stacked = np.vstack([parts[k] for k in names])
    pi = inclusion(stacked.sum(axis=0), size)
    taken = systematic(pi, rng)
    strategy = np.asarray(names)[np.argmax(stacked[:, taken], axis=0)] if len(taken) else []
    return [Pick(int(order[i]), str(s), float(pi[i])) for i, s in zip(taken, strategy, strict=True)]


def _by_nearness(
    scores: np.ndarray, threshold: float, exclude: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The texts left, nearest the threshold first, and 1.0 where each scores at or above it."""
    avail = np.flatnonzero(_available(len(scores), exclude))
    order = avail[np.argsort(np.abs(scores[avail] - threshold), kind="stable")]
    return order, (scores[order] >= threshold).astype(np.float64)


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
    """A later round from the current model's scores, drawn with known probabilities (see the
    module docstring)."""
    mix = mix or DEFAULT_MIX
    order, above = _by_nearness(scores, threshold, exclude)
    if not len(order) or size <= 0:
        return []
    uncertain, positive = mix.get("uncertain", 0.0), mix.get("positive", 0.0)
    if not above.any():
        uncertain, positive = uncertain + positive, 0.0
    weights = _rank_weights(len(order), RANK_SCALE)
    parts = {
        "uncertain": uncertain * weights / weights.sum(),
        "positive": positive * above / max(above.sum(), 1.0),
        "random": np.full(len(order), mix.get("random", 0.0) / len(order)),
    }
    return _draw(order, parts, size, rng)


def check_round(
    scores: np.ndarray,
    threshold: float,
    *,
    size: int,
    rng: np.random.Generator,
    exclude: np.ndarray | None = None,
) -> list[Pick]:
    """A round that checks what a concept tracker misses: texts below the threshold only, most from
    just below it (by rank, weight 1 / (1 + (rank / ``CHECK_RANK_SCALE``)²)), the rest uniform over
    all of them; drawn with known probabilities, strategy ``check``."""
    avail = np.flatnonzero(_available(len(scores), exclude))
    below = avail[scores[avail] < threshold]
    if not len(below) or size <= 0:
        return []
    order = below[np.argsort(threshold - scores[below], kind="stable")]
    weights = _rank_weights(len(order), CHECK_RANK_SCALE)
    share = CHECK_MIX["below_near"] * weights / weights.sum() + CHECK_MIX["below_far"] / len(order)
    return [Pick(p.index, "check", p.probability) for p in _draw(order, {"check": share}, size, rng)]


REVIEW_MIX = {"uncertain": 0.5, "positive": 0.25, "negative": 0.25}


def review_round(
    scores: np.ndarray,
    threshold: float,
    *,
    size: int,
    rng: np.random.Generator,
    exclude: np.ndarray | None = None,
) -> list[Pick]:
    """A round of live traffic: ``REVIEW_MIX`` of the texts left, by rank from the threshold as in
    ``next_round`` (uncertain), uniform over the matches (positive) and over the rest (negative); one
    draw with known probabilities, so that the answers describe live traffic in the estimates."""
    order, above = _by_nearness(scores, threshold, exclude)
    if not len(order) or size <= 0:
        return []
    below = 1.0 - above
    mix = dict(REVIEW_MIX)
    for part, members in (("positive", above), ("negative", below)):
        if not members.any():  # none of them: its share goes to the uncertain part
            mix["uncertain"] += mix.pop(part)
    weights = _rank_weights(len(order), RANK_SCALE)
    parts = {"uncertain": mix["uncertain"] * weights / weights.sum()}
    if "positive" in mix:
        parts["positive"] = mix["positive"] * above / above.sum()
    if "negative" in mix:
        parts["negative"] = mix["negative"] * below / below.sum()
    return _draw(order, parts, size, rng)


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
        start = len(rnd.picks)
        while len(rnd.picks) < goal and queues:
            for c in list(queues):
                if len(rnd.picks) >= goal:
                    break
                if not any(rnd.add(int(i), "positive") for i in queues[c]):
                    del queues[c]  # this label has no more predicted members to show
        # A label's predicted members each had the same chance: how many of them the round took.
        members = {c: int(np.sum(predicted == c)) for c in range(probabilities.shape[1])}
        label_of = dict(zip(avail.tolist(), predicted.tolist(), strict=True))
        taken = collections.Counter(label_of[p.index] for p in rnd.picks[start:])
        for k in range(start, len(rnd.picks)):
            c = label_of[rnd.picks[k].index]
            rnd.picks[k] = Pick(rnd.picks[k].index, "positive", taken[c] / members[c])
    rnd.take_random(rng, size - len(rnd.picks))
    return rnd.picks
