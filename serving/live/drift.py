"""Whether live traffic's scores look like the training pool's: pure numpy.

The training pool's scores by the live model (its texts nobody answered: the ones it did not learn
from, as new texts are) cut the score range into ten deciles, each holding a tenth of the pool. Live
texts scored by that model fall into them in some shares; the population stability index,
PSI = Σ (live − pool) · ln(live / pool) over the deciles, is 0 when the shares are alike and grows
as they part. Drift is reported over at least ``MIN_TEXTS`` live texts when PSI reaches the
threshold in use (``threshold``): ``PSI_THRESHOLD`` (0.25, the usual line for "a significant
shift"), or, where samples are small, the PSI that chance alone passes once in a hundred. Two samples
of one population give PSI ≈ χ²₉ · (1/n + 1/m) for n live and m pool texts, whose 99th percentile
is 21.67 · (1/n + 1/m): 0.22 for 100 live texts against a large pool, 0.43 against a pool of 76.
Shares are smoothed by half a text per decile so that an empty decile does not make PSI infinite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2

BINS = 10
PSI_THRESHOLD = 0.25
MIN_TEXTS = 100
FALSE_ALARM = 0.01  # the chance, with live traffic like the pool, of a warning all the same


@dataclass(frozen=True)
class Drift:
    psi: float | None  # None: too few live texts to say
    drifted: bool
    threshold: float  # the PSI at which drift is reported, for these sample sizes
    texts: int  # live texts compared
    edges: list[float]  # the inner cut points of the pool's score deciles
    pool_shares: list[float]
    live_shares: list[float]
    message: str  # what changed most, in words ("" when nothing did or there is too little to say)

    @property
    def ranges(self) -> list[tuple[float, float]]:
        bounds = [0.0, *self.edges, 1.0]
        return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


def decile_edges(reference: np.ndarray, bins: int = BINS) -> np.ndarray:
    """The inner cut points that split ``reference`` into ``bins`` equal shares (ties merged)."""
    reference = np.asarray(reference, dtype=np.float64)
    if not len(reference):
        return np.zeros(0)
    return np.unique(np.quantile(reference, np.arange(1, bins) / bins))


def shares(scores: np.ndarray, edges: np.ndarray, smooth: float = 0.0) -> np.ndarray:
    """Each bin's share of ``scores`` (with ``smooth`` texts added to every bin)."""
    at = np.searchsorted(edges, np.asarray(scores, dtype=np.float64), side="right")
    counts: np.ndarray = np.bincount(at, minlength=len(edges) + 1).astype(np.float64) + smooth
    total = counts.sum()
    return counts / total if total else counts


def psi(pool: np.ndarray, live: np.ndarray) -> float:
    """The population stability index of two share vectors (both positive)."""
    return float(np.sum((live - pool) * np.log(live / pool)))


def _fmt(x: float) -> str:
    return f"{x:.2f}"


def what_changed(ranges: list[tuple[float, float]], pool: np.ndarray, live: np.ndarray) -> str:
    """The decile that moved PSI most, in words: "scores between 0.31 and 0.58 are 4.2× as common as
    in training" (or "a third as common"). Neighbouring deciles that moved the same way are told as
    one range."""
    parts = (live - pool) * np.log(live / pool)
    top = int(np.argmax(parts))
    up = live[top] > pool[top]
    lo = hi = top
    while lo > 0 and (live[lo - 1] > pool[lo - 1]) == up and parts[lo - 1] > 0.25 * parts[top]:
        lo -= 1
    while hi < len(parts) - 1 and (live[hi + 1] > pool[hi + 1]) == up and parts[hi + 1] > 0.25 * parts[top]:
        hi += 1
    ratio = float(live[lo : hi + 1].sum() / pool[lo : hi + 1].sum())
    where = f"scores between {_fmt(ranges[lo][0])} and {_fmt(ranges[hi][1])}"
    if ratio >= 1:
        return f"{where} are {ratio:.1f}× as common as in training"
    return f"{where} are {1 / ratio:.1f}× rarer than in training"


def threshold(n_live: int, n_pool: int, bins: int = BINS) -> float:
    """The PSI that reports drift: ``PSI_THRESHOLD``, or what chance alone passes with probability
    ``FALSE_ALARM`` between samples this small, whichever is larger."""
    if not n_live or not n_pool:
        return PSI_THRESHOLD
    chance = float(chi2.ppf(1 - FALSE_ALARM, bins - 1)) * (1 / n_live + 1 / n_pool)
    return max(PSI_THRESHOLD, chance)


def compare(reference: np.ndarray, live: np.ndarray) -> Drift:
    """Live scores against the training pool's (``reference``), over the pool's score deciles."""
    reference = np.asarray(reference, dtype=np.float64)
    live = np.asarray(live, dtype=np.float64)
    edges = decile_edges(reference)
    pool_shares = shares(reference, edges, smooth=0.5)
    live_shares = shares(live, edges, smooth=0.5)
    bounds = [0.0, *edges.tolist(), 1.0]
    ranges = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    enough = len(live) >= MIN_TEXTS and len(reference) >= 2 * BINS
    value = psi(pool_shares, live_shares) if enough else None
    line = threshold(len(live), len(reference), len(edges) + 1)
    drifted = value is not None and value >= line
    return Drift(
        psi=value,
        drifted=drifted,
        threshold=line,
        texts=len(live),
        edges=edges.tolist(),
        pool_shares=pool_shares.tolist(),
        live_shares=live_shares.tolist(),
        message=what_changed(ranges, pool_shares, live_shares) if drifted else "",
    )
