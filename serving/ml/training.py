"""Train a tracker's head on frozen sentence vectors: features, model, threshold, honest metrics.

Pure numpy/scikit-learn. Two feature sets compete by cross-validation on the labels:
``embedding`` (the 384-d sentence vector) and ``embedding+chars`` (plus hashed character
2-4-grams, which catch the surface cues of spam-like concepts: numbers, URLs, odd spelling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

FEATURIZERS = ("embedding", "embedding+chars")
CHAR_FEATURES = {"analyzer": "char_wb", "ngram_range": (2, 4), "n_features": 2**14}
_hasher = HashingVectorizer(**CHAR_FEATURES, alternate_sign=False, norm="l2")


def featurize(vectors: np.ndarray, texts: list[str] | None, kind: str):
    """The model's input matrix for ``kind``."""
    if kind == "embedding":
        return np.asarray(vectors, dtype=np.float32)
    if kind == "embedding+chars":
        if texts is None:
            raise ValueError("the embedding+chars features need the texts")
        return sp.hstack(
            [sp.csr_matrix(np.asarray(vectors, dtype=np.float32)), _hasher.transform(texts)]
        ).tocsr()
    raise ValueError(f"unknown featurizer {kind!r}")


def _fit(features, y: np.ndarray, C: float = 1.0) -> LogisticRegression:
    return LogisticRegression(C=C, class_weight="balanced", max_iter=2000).fit(features, y)


def out_of_fold_scores(features, y: np.ndarray, *, folds: int = 5, seed: int = 0) -> np.ndarray | None:
    """Cross-validated P(yes) for every labeled row; None when a class has fewer than 2 labels."""
    k = int(min(folds, y.sum(), len(y) - y.sum()))
    if k < 2:
        return None
    scores = np.zeros(len(y))
    for train, test in StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y):
        scores[test] = _fit(features[train], y[train]).predict_proba(features[test])[:, 1]
    return scores


def prf(y: np.ndarray, predicted: np.ndarray) -> tuple[float, float, float]:
    tp = int(np.sum(predicted & (y == 1)))
    fp = int(np.sum(predicted & (y == 0)))
    fn = int(np.sum(~predicted & (y == 1)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return precision, recall, f1


def choose_threshold(y: np.ndarray, scores: np.ndarray | None, target_precision: float) -> tuple[float, str]:
    """The F1-best threshold among those whose cross-validated precision meets the target.

    If none meets it, the F1-best threshold overall (the target is out of reach with these labels).
    """
    if scores is None:
        return 0.5, "default (too few labels of one class)"
    candidates = np.unique(scores)
    best, best_any = None, None
    for t in candidates:
        p, _, f1 = prf(y, scores >= t)
        if best_any is None or f1 > best_any[0]:
            best_any = (f1, t)
        if p >= target_precision and (best is None or f1 > best[0]):
            best = (f1, t)
    # Midway to the next lower score, so a new text scoring like the cut-off example still passes.
    chosen, how = (best, "meets target precision") if best else (best_any, "target precision not reached")
    lower = candidates[candidates < chosen[1]]
    threshold = (chosen[1] + lower.max()) / 2 if len(lower) else chosen[1] / 2
    return float(threshold), how


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Head:
    """A trained binary head: features, weights, threshold and how good it is believed to be."""

    featurizer: str
    model: LogisticRegression
    threshold: float
    threshold_rule: str
    labels: int
    positives: int
    cv: dict = field(default_factory=dict)  # precision/recall/f1 from out-of-fold scores
    candidates: dict = field(default_factory=dict)  # cross-validated F1 of each featurizer
    pr_curve: list = field(default_factory=list)

    def score(self, vectors: np.ndarray, texts: list[str] | None = None) -> np.ndarray:
        return self.model.predict_proba(featurize(vectors, texts, self.featurizer))[:, 1]


def train_binary(
    vectors: np.ndarray,
    y: np.ndarray,
    *,
    texts: list[str] | None = None,
    target_precision: float = 0.8,
    featurizers: tuple[str, ...] | None = None,
) -> Head:
    """Pick features by cross-validated F1, fit on every label, choose the threshold."""
    y = np.asarray(y, dtype=np.int64)
    if y.min() == y.max():
        raise ValueError("training needs at least one 'yes' and one 'no' label")
    kinds = featurizers or (FEATURIZERS if texts is not None else ("embedding",))
    trials = {}
    for kind in kinds:
        feats = featurize(vectors, texts, kind)
        oof = out_of_fold_scores(feats, y)
        t, rule = choose_threshold(y, oof, target_precision)
        trials[kind] = (prf(y, oof >= t)[2] if oof is not None else 0.0, feats, oof, t, rule)
    # Prefer the plainer features unless the richer ones are clearly better.
    kind = max(kinds, key=lambda k: trials[k][0] - (0.01 if k != "embedding" else 0.0))
    _, feats, oof, threshold, rule = trials[kind]
    head = Head(
        featurizer=kind,
        model=_fit(feats, y),
        threshold=threshold,
        threshold_rule=rule,
        labels=len(y),
        positives=int(y.sum()),
        candidates={k: round(v[0], 4) for k, v in trials.items()},
    )
    if oof is not None:
        p, r, f = prf(y, oof >= threshold)
        head.cv = {"precision": p, "recall": r, "f1": f}
        for t in np.quantile(oof, np.linspace(0, 1, 21)):
            p, r, _ = prf(y, oof >= t)
            head.pr_curve.append({"threshold": float(t), "precision": p, "recall": r})
    return head


def sample_estimates(
    *,
    random_labels: np.ndarray,
    random_scores: np.ndarray,
    positive_sample_labels: np.ndarray,
    predicted_positive_count: int,
    pool_size: int,
    threshold: float,
) -> dict:
    """Unbiased precision/recall from a uniform sample of the pool and one of its predicted positives.

    Precision: the share of 'yes' among uniformly sampled predicted positives (plus random-sample
    items that score above the threshold). Recall: estimated true positives above the threshold over
    the estimated positives in the pool (prevalence from the uniform sample).
    """
    above = random_scores >= threshold
    pos_yes = int(np.sum(positive_sample_labels)) + int(np.sum(random_labels[above]))
    pos_n = len(positive_sample_labels) + int(np.sum(above))
    prevalence_yes, n_random = int(np.sum(random_labels)), len(random_labels)
    precision = pos_yes / pos_n if pos_n else None
    prevalence = prevalence_yes / n_random if n_random else None
    recall = None
    if precision is not None and prevalence:
        recall = min(1.0, precision * predicted_positive_count / (prevalence * pool_size))
    return {
        "precision": precision,
        "precision_ci": wilson(pos_yes, pos_n),
        "prevalence": prevalence,
        "prevalence_ci": wilson(prevalence_yes, n_random),
        "recall": recall,
        "sample_sizes": {"predicted_positive": pos_n, "random": n_random},
    }


@dataclass
class LinearScorer:
    """A stored head: the features it reads, its weights and its threshold."""

    featurizer: str
    coef: np.ndarray
    intercept: float
    threshold: float

    def score(self, vectors: np.ndarray, texts: list[str] | None = None) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        dim = vectors.shape[1]
        z = vectors @ self.coef[:dim] + self.intercept
        if self.featurizer == "embedding+chars":
            if texts is None:
                raise ValueError("the embedding+chars features need the texts")
            # The dense and the hashed parts are scored apart: stacking them would copy every vector.
            z = z + _hasher.transform(texts) @ self.coef[dim:]
        return 1.0 / (1.0 + np.exp(-np.asarray(z).ravel()))


def scorer_of(head: Head) -> LinearScorer:
    return LinearScorer(
        head.featurizer,
        head.model.coef_[0].astype(np.float32),
        float(head.model.intercept_[0]),
        head.threshold,
    )


def save_scorer(scorer: LinearScorer, path) -> None:
    from trackers.ml.storage import write_atomic

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                coef=scorer.coef,
                intercept=scorer.intercept,
                threshold=scorer.threshold,
                featurizer=scorer.featurizer,
            )

    write_atomic(path, write)


def load_scorer(path) -> LinearScorer:
    with np.load(path) as z:
        return LinearScorer(str(z["featurizer"]), z["coef"], float(z["intercept"]), float(z["threshold"]))
