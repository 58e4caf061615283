"""How good a head is over all of a tracker's texts, with 95% intervals. Pure numpy.

Concept trackers. The tracker's texts split at the threshold in use:

- **answered** texts: their answer is known. They count by the prediction of a model that did
  not see them (their out-of-fold score), since the head's own score of them is flattering and
  the numbers are meant to describe texts it has not seen;
- **unanswered** texts, at or above the threshold (predicted matches nobody has checked) and below
  it (where the matches it misses are): how many of them are matches is estimated.

Cards are drawn with known probabilities (``labeling.ml.selection``), so an answer stands for
1 / its card's probability texts. A calibration P(yes | score), a logistic curve of the logit
score, is fitted on the answered cards' out-of-fold scores with those weights, pulled gently
towards the head's own scores (``CALIBRATION_RIDGE``), and refitted on bootstrap resamples of the
cards so that its own uncertainty shows. Summed over the unanswered texts it gives their expected
matches; in three bands (at or above the threshold, the ``NEAR_BAND`` texts just below it, the rest)
the cards drawn by chance that fell there say how far the curve is off in that band, as a shift of its log-odds
with a normal prior of ``BAND_SHIFT_SD`` (``_band_shift``). The counts of true and false positives
and of missed matches are drawn from this, then redrawn as Poisson counts of rates drawn from their
posteriors (new texts like these would show other counts), and precision, recall and F1 are
computed per draw: the 2.5th and 97.5th percentiles are the interval, the median the value. With
no unanswered text at or above the threshold, precision is exact (the pool's own). Answers
without a drawn card (examples, feedback, runs saved before cards kept their probability) count
only as answered texts, unless too few cards have a probability to calibrate on.

Topics: per predicted class, the unanswered texts predicted so are a stratum, estimated from the
random and positive cards whose out-of-fold prediction is that class. Whether a card is right is
judged by its fold model (pessimistic: trained on fewer answers) in half the draws and by the head
itself (optimistic: trained on the card) in the other half, so the interval spans both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

DRAWS = 4000
PRIOR = 0.5  # Jeffreys
CALIBRATION_RIDGE = 0.1  # L2 penalty of the score calibration, towards the head's own scores (see _platt)
CALIBRATION_BOOTSTRAPS = 100
BAND_SHIFT_SD = 1.0  # prior sd of how far a band's log-odds may be off the calibration
NEAR_BAND = 250  # unanswered texts just below the threshold checked as a band of their own
MIN_CALIBRATION = 10  # answered texts with an out-of-fold score needed to calibrate


def _arrays(evidence: ConceptEvidence | TopicEvidence) -> dict[str, np.ndarray]:
    """The evidence as named arrays, for ``np.savez`` (strategies as plain strings)."""
    return {name: np.asarray(getattr(evidence, name)).astype(kind) for name, kind in evidence.DTYPES.items()}


def _typed(dtypes: Mapping[str, type], z: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: np.asarray(z[name]).astype(kind) for name, kind in dtypes.items()}


@dataclass
class ConceptEvidence:
    """What the estimate of a concept head needs, at any threshold.

    ``answered_scores``: the head's scores of the answered texts (exact stratum);
    ``answered_oof``: their out-of-fold scores (NaN where none: too few answers to cross-validate);
    ``answered_y``: 1 for yes, 0 for no; ``answered_strategy``: how each card was chosen;
    ``unanswered_scores``: the head's scores of every unanswered text of the tracker.
    """

    answered_scores: np.ndarray
    answered_oof: np.ndarray
    answered_y: np.ndarray
    answered_strategy: np.ndarray
    unanswered_scores: np.ndarray
    answered_probability: np.ndarray = field(default_factory=lambda: np.zeros(0))

    DTYPES: ClassVar[dict[str, type]] = {
        "answered_scores": np.float64,
        "answered_oof": np.float64,
        "answered_y": np.int64,
        "answered_strategy": str,
        "unanswered_scores": np.float64,
        "answered_probability": np.float64,
    }

    def __post_init__(self) -> None:
        if len(self.answered_probability) != len(self.answered_y):  # saved before cards kept one
            self.answered_probability = np.full(len(self.answered_y), np.nan)

    def arrays(self) -> dict[str, np.ndarray]:
        return _arrays(self)

    @classmethod
    def from_arrays(cls, z: Mapping[str, np.ndarray]) -> ConceptEvidence:
        present = {k: v for k, v in cls.DTYPES.items() if k in z}
        return cls(**_typed(present, z))


def _summary(values: np.ndarray) -> dict[str, Any]:
    values = values[np.isfinite(values)]
    if not len(values):
        return {"value": None, "ci": None}
    lo, mid, hi = np.percentile(values, [2.5, 50, 97.5])
    return {"value": float(mid), "ci": [float(lo), float(hi)]}


def _stratum_draws(
    rng: np.random.Generator,
    n_unanswered: int,
    yes: int,
    n: int,
    draws: int,
    prior: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Draws of how many of ``n_unanswered`` texts are matches, given ``yes`` of ``n`` sampled.

    ``prior``: per-draw Beta parameters (a, b) of the stratum's rate before the sampled cards;
    Jeffreys (0.5, 0.5) when None.
    """
    if n_unanswered == 0:
        return np.zeros(draws)
    a, b = prior if prior is not None else (np.full(draws, PRIOR), np.full(draws, PRIOR))
    p = rng.beta(a + yes, b + n - yes)
    return rng.binomial(n_unanswered, p).astype(np.float64)


def _sigmoid(z: np.ndarray | float) -> np.ndarray:
    out: np.ndarray = 1 / (1 + np.exp(-np.clip(z, -60, 60)))
    return out


def _logit(p: np.ndarray) -> np.ndarray:
    clipped = np.clip(np.asarray(p, dtype=np.float64), 1e-4, 1 - 1e-4)
    out: np.ndarray = np.log(clipped / (1 - clipped))
    return out


def _platt(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, float]:
    """P(yes | score) = sigmoid(a + b·logit(score)), by penalised Newton steps (pure numpy). The
    penalty pulls towards a = 0, b = 1: the head's own scores, which are probabilities already."""
    w = np.ones(len(x)) if weights is None else weights
    X = np.column_stack([np.ones(len(x)), x])
    centre = np.array([0.0, 1.0])
    beta = centre.copy()
    ridge = np.diag([CALIBRATION_RIDGE, CALIBRATION_RIDGE])
    for _ in range(30):
        p = _sigmoid(X @ beta)
        grad = X.T @ (w * (y - p)) - ridge @ (beta - centre)
        hess = (X * (w * p * (1 - p))[:, None]).T @ X + ridge
        step = np.linalg.solve(hess, grad)
        beta = beta + step
        if np.max(np.abs(step)) < 1e-8:
            break
    return float(beta[0]), float(beta[1])


def _weighted_cards(e: ConceptEvidence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The answered cards a calibration can learn from, as (logit of out-of-fold score, yes, weight).

    Cards drawn with a known probability weigh 1 / that probability: the texts they stand for.
    Answers with none (examples, feedback, a run saved before cards kept their probability) count
    only when fewer than ``MIN_CALIBRATION`` cards have one, and then all weigh 1.
    """
    ok = np.isfinite(e.answered_oof)
    drawn = ok & np.isfinite(e.answered_probability) & (e.answered_probability > 0)
    if int(drawn.sum()) >= MIN_CALIBRATION:
        weights = 1.0 / e.answered_probability[drawn]
        return _logit(e.answered_oof[drawn]), (e.answered_y[drawn] == 1).astype(np.float64), weights
    return _logit(e.answered_oof[ok]), (e.answered_y[ok] == 1).astype(np.float64), np.ones(int(ok.sum()))


def _bands(
    e: ConceptEvidence, x: np.ndarray, above: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Which band each unanswered text and each card (by its out-of-fold logit ``x``) is in: 0 at or
    above the threshold, 1 the ``NEAR_BAND`` unanswered texts just below it, 2 the rest below."""
    below = np.sort(e.unanswered_scores[~above])[::-1]
    edge = below[min(NEAR_BAND, len(below)) - 1] if len(below) else threshold
    text_band = np.where(above, 0, np.where(e.unanswered_scores >= edge, 1, 2))
    cut, near = _logit(np.array([threshold, edge]))
    card_band = np.where(x >= cut, 0, np.where(x >= near, 1, 2))
    return text_band, card_band


def _band_shift(eta: np.ndarray, t: np.ndarray, omega: np.ndarray) -> tuple[float, float]:
    """The shift δ of the calibration's log-odds that the cards of one band say (mean and standard
    deviation, by Laplace's approximation): their weighted answers against sigmoid(η + δ), with a
    normal prior of sd ``BAND_SHIFT_SD`` at 0."""
    delta = 0.0
    precision = 1.0 / BAND_SHIFT_SD**2
    for _ in range(25):
        p = _sigmoid(eta + delta)
        grad = float(np.sum(omega * (t - p))) - delta / BAND_SHIFT_SD**2
        precision = float(np.sum(omega * p * (1 - p))) + 1.0 / BAND_SHIFT_SD**2
        step = grad / precision
        delta += step
        if abs(step) < 1e-6:
            break
    return delta, precision**-0.5


def _expected_matches(
    rng: np.random.Generator, e: ConceptEvidence, above: np.ndarray, threshold: float, draws: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """``draws`` draws of the expected matches among the unanswered texts at or above the threshold
    and below it. None when the cards cannot fit a calibration (too few, or all one answer).

    Per bootstrap of the cards, the calibration P(yes | score) gives each unanswered text a
    probability of being a match. In each band of scores (``_bands``) the cards drawn by chance that
    fell there say how far the calibration's log-odds are off there (``_band_shift``): each card
    weighs 1 / its probability of having been drawn, and the band's weights count as many cards as
    they are worth (Kish's effective size). Where the cards are few a band stays uncertain; a check round's cards,
    drawn just below the threshold, narrow the band where missed matches are.
    """
    x, t, w = _weighted_cards(e)
    if len(t) < MIN_CALIBRATION or t.min() == t.max():
        return None
    fit_w = w * len(w) / w.sum()  # the ridge weighs the same whatever the pool's size
    xs = _logit(e.unanswered_scores)
    text_band, card_band = _bands(e, x, above, threshold)
    # Cards chosen outright (probability 1: an example's neighbours) stand for themselves alone: they
    # are answered texts, not a sample of their band, which they would make look like them.
    drawn = w > 1 + 1e-9 if np.any(w > 1 + 1e-9) else np.ones(len(w), dtype=bool)
    # Unanswered texts by band, as counts of nearly equal log-odds (a sum over 0.02-wide bins).
    bins = [np.unique(np.round(xs[text_band == k] / 0.02), return_counts=True) for k in range(3)]
    per = max(1, draws // CALIBRATION_BOOTSTRAPS)
    sums = np.zeros((CALIBRATION_BOOTSTRAPS, per, 3))
    for b in range(CALIBRATION_BOOTSTRAPS):
        counts = rng.multinomial(len(t), np.full(len(t), 1 / len(t))) if b else np.ones(len(t))
        a0, a1 = _platt(x, t, fit_w * counts)
        for k, (centres, n) in enumerate(bins):
            mine = (card_band == k) & (counts > 0) & drawn
            ww = (w * counts)[mine]
            delta, sd = 0.0, BAND_SHIFT_SD
            if len(ww):
                omega = ww * (ww.sum() / np.sum(ww**2 / counts[mine]))  # sums to the effective size
                delta, sd = _band_shift(a0 + a1 * x[mine], t[mine], omega)
            shifts = rng.normal(delta, sd, per)
            eta = a0 + a1 * (centres * 0.02)
            sums[b, :, k] = (n[None, :] * _sigmoid(eta[None, :] + shifts[:, None])).sum(axis=1)
    flat = sums.reshape(-1, 3)
    return flat[:, 0], flat[:, 1] + flat[:, 2]


def concept_estimates(
    evidence: ConceptEvidence, threshold: float, *, seed: int = 0, draws: int = DRAWS
) -> dict[str, Any]:
    """Precision, recall and F1 at ``threshold`` over all texts, each with a 95% interval."""
    e = evidence
    rng = np.random.default_rng(seed)
    # Answered texts count by the prediction of a model that did not see them (their out-of-fold
    # score; the head's own where there is none): the head's own score of them is flattering.
    placed = np.where(np.isfinite(e.answered_oof), e.answered_oof, e.answered_scores)
    predicted = placed >= threshold
    y = e.answered_y == 1
    tp_a, fp_a, fn_a = int(np.sum(predicted & y)), int(np.sum(predicted & ~y)), int(np.sum(~predicted & y))
    upper = e.unanswered_scores >= threshold
    n_above = int(np.sum(upper))
    n_below = len(e.unanswered_scores) - n_above
    expected = _expected_matches(rng, e, upper, threshold, draws)
    if expected is None:  # no calibration: each stratum's rate is Jeffreys' (anything is possible)
        rate_above = rng.beta(PRIOR, PRIOR, draws)
        rate_below = rng.beta(PRIOR, PRIOR, draws)
    else:
        pick = rng.integers(0, len(expected[0]), draws)
        rate_above = expected[0][pick] / max(n_above, 1)
        rate_below = expected[1][pick] / max(n_below, 1)
    y_above = rng.binomial(n_above, np.clip(rate_above, 0, 1)).astype(np.float64)
    y_below = rng.binomial(n_below, np.clip(rate_below, 0, 1)).astype(np.float64)
    tp = tp_a + y_above
    fp = fp_a + (n_above - y_above)
    fn = fn_a + y_below
    # The numbers describe new texts like these, not this pool alone: as many new texts would show
    # other counts. Each count is redrawn from a Poisson with a rate drawn from its posterior.
    tp, fp, fn = (rng.poisson(rng.gamma(np.maximum(c, 0) + PRIOR)).astype(np.float64) for c in (tp, fp, fn))
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        if n_above == 0:  # no predicted match left unanswered: the pool's precision is known exactly
            precision = np.full(draws, tp_a / (tp_a + fp_a) if tp_a + fp_a else np.nan)
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    drawn = np.isfinite(e.answered_probability) & np.isfinite(e.answered_oof)
    return {
        "threshold": float(threshold),
        "precision": _summary(precision),
        "recall": _summary(recall),
        "f1": _summary(f1),
        "precision_exact": n_above == 0,
        "strata": {
            "answered": len(e.answered_y),
            "unanswered_above": n_above,
            "unanswered_below": n_below,
            "drawn": int(drawn.sum()),
            "drawn_above": int(np.sum(drawn & (e.answered_oof >= threshold))),
            "drawn_below": int(np.sum(drawn & (e.answered_oof < threshold))),
            "expected_above": float(np.median(expected[0])) if expected is not None else None,
            "expected_below": float(np.median(expected[1])) if expected is not None else None,
        },
        "predicted_matches": int(np.sum(predicted)) + n_above,
        "method": "weighted calibration",
    }


@dataclass
class TopicEvidence:
    """What the estimate of a topic head needs: predicted and true classes, out-of-fold predictions."""

    answered_predicted: np.ndarray
    answered_oof: np.ndarray  # out-of-fold predicted class, -1 where none
    answered_y: np.ndarray
    answered_strategy: np.ndarray
    unanswered_predicted: np.ndarray

    DTYPES: ClassVar[dict[str, type]] = {
        "answered_predicted": np.int64,
        "answered_oof": np.int64,
        "answered_y": np.int64,
        "answered_strategy": str,
        "unanswered_predicted": np.int64,
    }

    def arrays(self) -> dict[str, np.ndarray]:
        return _arrays(self)

    @classmethod
    def from_arrays(cls, z: Mapping[str, np.ndarray]) -> TopicEvidence:
        return cls(**_typed(cls.DTYPES, z))


def topic_estimates(
    evidence: TopicEvidence, classes: list[str], *, seed: int = 0, draws: int = DRAWS
) -> dict[str, Any]:
    """Accuracy over all texts, and each class's share of the texts, with 95% intervals.

    Per predicted class, the unanswered texts predicted so are a stratum; uniformly drawn cards
    (random ones) placed by their out-of-fold prediction estimate how many of them are right.
    """
    e = evidence
    rng = np.random.default_rng(seed)
    right_a = int(np.sum(e.answered_predicted == e.answered_y))
    total = len(e.answered_y) + len(e.unanswered_predicted)
    right = np.full(draws, float(right_a))
    random = (e.answered_strategy == "random") & (e.answered_oof >= 0)
    positive = (e.answered_strategy == "positive") & (e.answered_oof >= 0)
    # A sampled card is judged right or wrong by a fold model (out-of-fold: pessimistic, it saw
    # fewer answers) and by the head itself (in-sample: optimistic, it saw the card); half of the
    # draws take each, so the interval spans both.
    half = np.arange(draws) < draws // 2
    for c in range(len(classes)):
        n_c = int(np.sum(e.unanswered_predicted == c))
        sample = (random | positive) & (e.answered_oof == c)
        yes_oof = int(np.sum(e.answered_y[sample] == c))
        yes_in = int(np.sum(e.answered_predicted[sample] == e.answered_y[sample]))
        n = int(np.sum(sample))
        d_oof = _stratum_draws(rng, n_c, yes_oof, n, draws)
        d_in = _stratum_draws(rng, n_c, yes_in, n, draws)
        right += np.where(half, d_in, d_oof)
    uniform = random | positive
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = right / total if total else np.full(draws, np.nan)
    shares = []
    counts = np.bincount(
        np.concatenate([e.answered_y, e.unanswered_predicted]).astype(np.int64), minlength=len(classes)
    )
    for c, name in enumerate(classes):
        shares.append(
            {"label": name, "predicted": int(counts[c]), "share": float(counts[c] / total) if total else None}
        )
    return {
        "accuracy": _summary(accuracy),
        "shares": shares,
        "strata": {
            "answered": len(e.answered_y),
            "unanswered": len(e.unanswered_predicted),
            "sampled": int(np.sum(uniform)),
        },
        "method": "strata",
    }
