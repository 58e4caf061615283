"""How good a head is over all of a tracker's texts, by strata, with 95% intervals. Pure numpy.

The tracker's texts split three ways at the threshold in use:

- **answered** texts: their answer is known. They count by the prediction of a model that did
  not see them (their out-of-fold score), since the head's own score of them is flattering and
  the numbers are meant to describe texts it has not seen;
- **unanswered at or above the threshold** (predicted matches nobody has checked): their share of
  real matches is estimated from the uniformly drawn cards that fall there (Jeffreys prior);
- **unanswered below the threshold**: their share of missed matches, likewise, but with a prior
  from the scores: a logistic curve P(yes | score) fitted on the answered texts' out-of-fold
  scores (refitted on bootstrap resamples) gives the stratum's expected share, weighted as
  ``PRIOR_STRENGTH`` cards. A rare concept's few random cards below the threshold are all 'no';
  under a flat prior that alone would imply hundreds of missed matches, while the calibrated
  scores say how rare they are. Random cards that do find matches still outweigh it.

The uniformly drawn cards are the ``random`` cards (uniform over the unanswered texts of their
round) and the ``positive`` cards (uniform over that round's predicted matches); each is placed in
a stratum by its out-of-fold score, as an unseen text of that stratum would be scored. A stratum's
count of matches is drawn from the beta-binomial; the pool's true/false positive and missed
counts are then redrawn as Poisson counts of rates drawn from their posteriors (as many new texts
would show other counts), and precision, recall and F1 are computed per draw: the 2.5th and 97.5th
percentiles are the interval, the median the value. With no unanswered text at or above the
threshold, precision is exact (the pool's own).

Topics: per predicted class, the unanswered texts predicted so are a stratum, estimated from the
random and positive cards whose out-of-fold prediction is that class. Whether a card is right is
judged by its fold model (pessimistic: trained on fewer answers) in half the draws and by the head
itself (optimistic: trained on the card) in the other half, so the interval spans both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

UNIFORM_STRATEGIES = ("random", "positive")
DRAWS = 4000
PRIOR = 0.5  # Jeffreys
PRIOR_STRENGTH = 8.0  # how many cards the calibrated prior of the below-threshold stratum weighs
CALIBRATION_RIDGE = 1.0  # L2 penalty of the score calibration's two coefficients
CALIBRATION_BOOTSTRAPS = 100
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

    DTYPES: ClassVar[dict[str, type]] = {
        "answered_scores": np.float64,
        "answered_oof": np.float64,
        "answered_y": np.int64,
        "answered_strategy": str,
        "unanswered_scores": np.float64,
    }

    def arrays(self) -> dict[str, np.ndarray]:
        return _arrays(self)

    @classmethod
    def from_arrays(cls, z: Mapping[str, np.ndarray]) -> ConceptEvidence:
        return cls(**_typed(cls.DTYPES, z))


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


def _logit(p: np.ndarray) -> np.ndarray:
    clipped = np.clip(np.asarray(p, dtype=np.float64), 1e-4, 1 - 1e-4)
    out: np.ndarray = np.log(clipped / (1 - clipped))
    return out


def _platt(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, float]:
    """P(yes | score) = sigmoid(a + b·logit(score)), by penalised Newton steps (pure numpy)."""
    w = np.ones(len(x)) if weights is None else weights
    X = np.column_stack([np.ones(len(x)), x])
    beta = np.zeros(2)
    ridge = np.diag([CALIBRATION_RIDGE, CALIBRATION_RIDGE])
    for _ in range(30):
        p = 1 / (1 + np.exp(-(X @ beta)))
        grad = X.T @ (w * (y - p)) - ridge @ beta
        hess = (X * (w * p * (1 - p))[:, None]).T @ X + ridge
        step = np.linalg.solve(hess, grad)
        beta = beta + step
        if np.max(np.abs(step)) < 1e-8:
            break
    return float(beta[0]), float(beta[1])


def _calibrated_prior(
    rng: np.random.Generator, oof: np.ndarray, y: np.ndarray, scores: np.ndarray, draws: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-draw Beta prior (a, b) of a stratum's share of matches, centred on calibrated scores.

    P(yes | score) is fitted (Platt: a logistic curve of the logit score) on the answered texts'
    out-of-fold scores: cards are chosen mostly by score, so it transfers to unanswered texts of
    the same score. The fit is redone on bootstrap resamples of the answered texts, so that its
    own uncertainty widens the interval. The prior's mean is the stratum's mean calibrated
    probability, its weight ``PRIOR_STRENGTH`` cards. None (Jeffreys) when it cannot be fitted.
    """
    ok = np.isfinite(oof)
    x, t = _logit(oof[ok]), (y[ok] == 1).astype(np.float64)
    if len(t) < MIN_CALIBRATION or t.min() == t.max() or not len(scores):
        return None
    xs = _logit(scores)
    means = np.zeros(CALIBRATION_BOOTSTRAPS)
    for b in range(CALIBRATION_BOOTSTRAPS):
        weights = rng.multinomial(len(t), np.full(len(t), 1 / len(t))).astype(np.float64) if b else None
        a0, a1 = _platt(x, t, weights)
        means[b] = float(np.mean(1 / (1 + np.exp(-(a0 + a1 * xs)))))
    m = np.clip(means[rng.integers(0, CALIBRATION_BOOTSTRAPS, draws)], 1e-5, 1 - 1e-5)
    return m * PRIOR_STRENGTH, (1 - m) * PRIOR_STRENGTH


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
    uniform = np.isin(e.answered_strategy, UNIFORM_STRATEGIES) & np.isfinite(e.answered_oof)
    # A positive card was drawn among predicted matches: it samples the upper stratum only.
    above = uniform & (e.answered_oof >= threshold)
    below = uniform & (e.answered_oof < threshold) & (e.answered_strategy == "random")
    yes_above, n_s_above = int(np.sum(y[above])), int(np.sum(above))
    yes_below, n_s_below = int(np.sum(y[below])), int(np.sum(below))
    # Above the threshold the positive cards are plenty: Jeffreys. Below it, matches are often too
    # rare for a handful of random cards: the calibrated scores say how rare.
    below_prior = _calibrated_prior(rng, e.answered_oof, e.answered_y, e.unanswered_scores[~upper], draws)
    y_above = _stratum_draws(rng, n_above, yes_above, n_s_above, draws)
    y_below = _stratum_draws(rng, n_below, yes_below, n_s_below, draws, below_prior)
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
    out = {
        "threshold": float(threshold),
        "precision": _summary(precision),
        "recall": _summary(recall),
        "f1": _summary(f1),
        "precision_exact": n_above == 0,
        "strata": {
            "answered": len(e.answered_y),
            "unanswered_above": n_above,
            "unanswered_below": n_below,
            "sampled_above": n_s_above,
            "sampled_above_yes": yes_above,
            "sampled_below": n_s_below,
            "sampled_below_yes": yes_below,
        },
        "predicted_matches": int(np.sum(predicted)) + n_above,
        "method": "strata",
    }
    return out


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
