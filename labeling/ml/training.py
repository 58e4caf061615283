"""Train a tracker's head on frozen sentence vectors: features, model, threshold, honest metrics.

Pure numpy/scikit-learn. The features are the 384-d sentence vector (``embedding``) or, where
cross-validation prefers them by more than ``RICHER_MARGIN`` F1, the vector beside the TF-IDF of the encoder's
own token n-grams (``ngrams``, ``trackers.ml.ngrams``): spam lives in its surface ("FREE", "txt",
"call now") as much as in its meaning. Every featurizer exports to ONNX with the head (the n-grams
through ONNX's ``TfIdfVectorizer`` on the model's ``input_ids``); hashed character n-grams have no
ONNX form and are not used.

Background: the answers come from active learning, so the 'no' answers are mostly hard near-misses
and the model never sees the bulk of ordinary segments. A uniform sample of unlabeled segments
(``BACKGROUND`` rows) joins training as weak 'no' rows, together weighing as much as all the 'no'
answers; rows that a first model fit on the answers alone scores at ``BACKGROUND_MAX_YES`` or more
are left out, so that a common concept's members (spam is 13% of SMS) do not teach 'no'. The rows
are dealt round the cross-validation folds and only ever train, never score: the threshold is
still chosen on the answers alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from trackers.ml.ngrams import Ngrams

# Every one of them exports to ONNX (serving.ml.export). ``ngrams``: the sentence vector beside the
# TF-IDF of the encoder's token n-grams (``trackers.ml.ngrams``), offered where the pool has them.
FEATURIZERS = ("embedding", "ngrams")
RICHER_MARGIN = 0.03  # cross-validated F1 the n-gram features must gain over the vector alone (see below)
FEATURIZER_NAMES = {"embedding": "sentence vector", "ngrams": "sentence vector and token n-grams"}
REGULARISATION_C = 16.0  # inverse L2 strength; C=1 over-shrinks on unit-norm sentence vectors
BACKGROUND = 500  # unlabeled segments sampled as weak 'no' rows (see the module docstring)
BACKGROUND_WEIGHT = 1.0  # their total weight, relative to the total weight of the 'no' answers
BACKGROUND_MAX_YES = 0.9  # sampled rows a first, answers-only model scores at least this high are dropped


def background_sample(
    n_pool: int, labeled: np.ndarray, *, size: int = BACKGROUND, seed: int = 0
) -> np.ndarray:
    """A uniform sample of the pool's unlabeled rows, reproducible for a given set of labels."""
    candidates = np.setdiff1d(np.arange(n_pool), np.asarray(labeled, dtype=np.int64))
    rng = np.random.default_rng(seed + len(labeled))
    return rng.choice(candidates, min(size, len(candidates)), replace=False)


Features: TypeAlias = np.ndarray | sparse.csr_matrix


def featurize(vectors: np.ndarray, kind: str, tokens: sparse.csr_matrix | None = None) -> Features:
    """The model's input matrix for ``kind``: the vectors, or (``ngrams``) the vectors beside the
    rows' token n-gram features ``tokens`` (sparse)."""
    dense = np.asarray(vectors, dtype=np.float32)
    if kind == "embedding":
        return dense
    if kind == "ngrams":
        if tokens is None or tokens.shape[0] != dense.shape[0]:
            raise ValueError("token n-gram features need one row of n-grams per vector")
        out: sparse.csr_matrix = sparse.hstack([sparse.csr_matrix(dense), tokens], format="csr")
        return out
    raise ValueError(f"unknown featurizer {kind!r}")


def _stack(a: Features, b: Features | None) -> Features:
    if b is None or b.shape[0] == 0:
        return a
    if sparse.issparse(a) or sparse.issparse(b):
        out: sparse.csr_matrix = sparse.vstack([a, b], format="csr")
        return out
    return np.vstack([a, b])


def _fit(features: np.ndarray, y: np.ndarray, C: float = REGULARISATION_C) -> LogisticRegression:
    """A topic head: class-balanced multinomial LR with the concept heads' regularisation."""
    return LogisticRegression(C=C, class_weight="balanced", max_iter=2000).fit(features, y)


def _fit_binary(
    features: Features,
    y: np.ndarray,
    background: Features | None = None,
    C: float = REGULARISATION_C,
    extra_yes: Features | None = None,
) -> LogisticRegression:
    """Class-balanced LR on the answers, plus ``background`` rows as 'no' (see the module docstring)
    and ``extra_yes`` rows (example sentences not found in the data) as 'yes'."""
    y = np.asarray(y, dtype=np.int64)
    ne = 0 if extra_yes is None else extra_yes.shape[0]
    if ne:
        features = _stack(features, extra_yes)
        y = np.concatenate([y, np.ones(ne, dtype=np.int64)])
    n, pos = len(y), int(y.sum())
    if pos == 0 or pos == n:
        raise ValueError("training needs at least one 'yes' and one 'no' label")
    weights = np.where(y == 1, n / (2 * pos), n / (2 * (n - pos)))  # = class_weight="balanced"
    nb = 0 if background is None else background.shape[0]
    if nb:
        no_weight = float(weights[y == 0].sum())
        weights = np.concatenate([weights, np.full(nb, BACKGROUND_WEIGHT * no_weight / nb)])
        y = np.concatenate([y, np.zeros(nb, dtype=np.int64)])
    features = _stack(features, background)
    return LogisticRegression(C=C, max_iter=2000).fit(features, y, sample_weight=weights)


def out_of_fold_scores(
    features: Features,
    y: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    background: Features | None = None,
    extra_yes: Features | None = None,
) -> np.ndarray | None:
    """Cross-validated P(yes) for every labeled row; None when a class has fewer than 2 labels.

    ``background`` rows are dealt round the folds and train every fold but their own; they are never scored.
    """
    k = int(min(folds, y.sum(), len(y) - y.sum()))
    if k < 2:
        return None
    nb = 0 if background is None else background.shape[0]
    bfold = np.arange(nb) % k
    scores = np.zeros(len(y))
    for i, (train, test) in enumerate(
        StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)
    ):
        bg = background[np.flatnonzero(bfold != i)] if background is not None and nb else None
        model = _fit_binary(features[train], y[train], bg, extra_yes=extra_yes)
        scores[test] = model.predict_proba(features[test])[:, 1]
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
    assert chosen is not None, "scores has a value for every label, and there are labels"
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
    cv: dict[str, float] = field(default_factory=dict)  # precision/recall/f1 from out-of-fold scores
    candidates: dict[str, float] = field(default_factory=dict)  # cross-validated F1 of each featurizer
    pr_curve: list[dict[str, float]] = field(default_factory=list)
    background: int = 0  # unlabeled segments that trained as weak 'no' rows
    examples: int = 0  # example sentences (not found in the data) that trained as 'yes' rows
    oof: np.ndarray | None = None  # out-of-fold P(yes) of every labeled row, in order
    ngrams: Ngrams | None = None  # the token n-grams the ``ngrams`` features count

    def score(self, vectors: np.ndarray, tokens: sparse.csr_matrix | None = None) -> np.ndarray:
        scores: np.ndarray = self.model.predict_proba(featurize(vectors, self.featurizer, tokens))[:, 1]
        return scores


@dataclass(frozen=True)
class Tokens:
    """Token n-gram features for training: the vocabulary and the rows of the labeled texts, the
    background rows and the typed examples (as ``train_binary``'s vectors are given)."""

    ngrams: Ngrams
    labeled: sparse.csr_matrix
    background: sparse.csr_matrix | None = None
    examples: sparse.csr_matrix | None = None


def train_binary(
    vectors: np.ndarray,
    y: np.ndarray,
    *,
    target_precision: float = 0.8,
    featurizers: tuple[str, ...] | None = None,
    background_vectors: np.ndarray | None = None,
    example_vectors: np.ndarray | None = None,
    tokens: Tokens | None = None,
) -> Head:
    """Pick features by cross-validated F1, fit on every label, choose the threshold.

    ``background_vectors``: unlabeled segments, e.g. from ``background_sample``, used as weak 'no'
    rows. ``example_vectors``: example sentences that are not in the data, used as 'yes' rows that
    train every fold and are never scored. ``tokens``: their token n-gram features; without them the
    ``ngrams`` features are not tried. ``featurizers``: those to try (``FEATURIZERS`` when None).
    """
    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0 or y.min() == y.max():
        raise ValueError("training needs at least one 'yes' and one 'no' label")
    if example_vectors is not None and not len(example_vectors):
        example_vectors = None
    offered = FEATURIZERS if featurizers is None else featurizers
    kinds = tuple(k for k in offered if k != "ngrams" or tokens is not None) or ("embedding",)
    background_tokens = tokens.background if tokens is not None else None
    if background_vectors is not None and len(background_vectors):
        # Drop the sampled segments that the answers alone already call 'yes': for a common concept
        # (spam is 13% of SMS) many of them are, and they must not teach the model 'no'.
        background_vectors = np.asarray(background_vectors, dtype=np.float32)
        first = _fit_binary(np.asarray(vectors, dtype=np.float32), y)
        keep = first.predict_proba(background_vectors)[:, 1] < BACKGROUND_MAX_YES
        background_vectors = background_vectors[keep]
        if background_tokens is not None:
            background_tokens = background_tokens[np.flatnonzero(keep)]
    trials = {}
    for kind in kinds:
        with_tokens = kind == "ngrams" and tokens is not None
        feats = featurize(vectors, kind, tokens.labeled if with_tokens and tokens else None)
        bg = ex = None
        if background_vectors is not None and len(background_vectors):
            bg = featurize(background_vectors, kind, background_tokens if with_tokens else None)
        if example_vectors is not None:
            ex = featurize(example_vectors, kind, tokens.examples if with_tokens and tokens else None)
        oof = out_of_fold_scores(feats, y, background=bg, extra_yes=ex)
        t, rule = choose_threshold(y, oof, target_precision)
        trials[kind] = (prf(y, oof >= t)[2] if oof is not None else 0.0, feats, oof, t, rule, bg, ex)
    # Prefer the plainer features unless the richer ones are clearly better: at a margin of 0.01 the
    # n-grams won cross-validation by chance on some intents and cost top_up_failed 0.016 F1 in
    # make simulate; at 0.03 SMS spam keeps 0.921 and no Banking77 intent loses.
    kind = max(kinds, key=lambda k: trials[k][0] - (RICHER_MARGIN if k != "embedding" else 0.0))
    _, feats, oof, threshold, rule, bg, ex = trials[kind]
    head = Head(
        featurizer=kind,
        model=_fit_binary(feats, y, bg, extra_yes=ex),
        background=0 if bg is None else bg.shape[0],
        examples=0 if ex is None else ex.shape[0],
        oof=oof,
        threshold=threshold,
        threshold_rule=rule,
        labels=len(y),
        positives=int(y.sum()),
        candidates={k: round(v[0], 4) for k, v in trials.items()},
        ngrams=tokens.ngrams if kind == "ngrams" and tokens is not None else None,
    )
    if oof is not None:
        p, r, f = prf(y, oof >= threshold)
        head.cv = {"precision": p, "recall": r, "f1": f}
        for t in np.quantile(oof, np.linspace(0, 1, 21)):
            p, r, _ = prf(y, oof >= t)
            head.pr_curve.append({"threshold": float(t), "precision": p, "recall": r})
    return head


def train_topic(vectors: np.ndarray, y: np.ndarray, labels: list[str], *, folds: int = 5) -> TopicHead:
    """A multinomial head over the sentence vectors for a topic tracker (``y`` indexes ``labels``).

    Quality is cross-validated: accuracy, macro-F1, per-label precision/recall/F1 and the confusion
    matrix, counted over the labels that have answers.
    """
    y = np.asarray(y, dtype=np.int64)
    present = np.unique(y)
    if len(present) < 2:
        raise ValueError("training needs answers for at least two labels")
    feats = np.asarray(vectors, dtype=np.float32)
    model = _fit(feats, y)
    head = TopicHead(
        model=model,
        labels=list(labels),
        n_labels=len(y),
        counts=np.bincount(y, minlength=len(labels)).tolist(),
    )
    k = int(min(folds, np.bincount(y)[present].min()))
    if k >= 2:  # folds=0 skips cross-validation
        predicted = np.zeros(len(y), dtype=np.int64)
        for train, test in StratifiedKFold(k, shuffle=True, random_state=0).split(feats, y):
            fold = _fit(feats[train], y[train])
            predicted[test] = fold.classes_[np.argmax(fold.predict_proba(feats[test]), axis=1)]
        head.cv = topic_report(y, predicted, labels)
        head.oof = predicted
    return head


def topic_report(y: np.ndarray, predicted: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 over the labels present, per-label P/R/F1 and the confusion matrix."""
    per_label, f1s = [], []
    present = set(np.unique(y).tolist())
    for c, name in enumerate(labels):
        p, r, f = prf(y == c, predicted == c)
        per_label.append(
            {"label": name, "precision": p, "recall": r, "f1": f, "support": int(np.sum(y == c))}
        )
        if c in present:
            f1s.append(f)
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(confusion, (y, predicted), 1)
    return {
        "accuracy": float(np.mean(y == predicted)),
        "f1": float(np.mean(f1s)) if f1s else 0.0,
        "per_label": per_label,
        "confusion": confusion.tolist(),
    }


@dataclass
class TopicHead:
    model: LogisticRegression
    labels: list[str]
    n_labels: int
    counts: list[int]
    cv: dict[str, Any] = field(default_factory=dict)
    featurizer: str = "embedding"
    oof: np.ndarray | None = None  # out-of-fold predicted class of every labeled row


@dataclass
class LinearScorer:
    """A stored head: the features it reads and its weights (the threshold in use is not part of it).

    Concept heads have one weight column and score P(yes); topic heads have one column per label
    and give a softmax over ``labels`` (``score`` is then the probability of the predicted label).
    """

    featurizer: str
    coef: np.ndarray  # (features,) or (features, labels)
    intercept: np.ndarray | float
    labels: list[str] = field(default_factory=list)
    ngrams: Ngrams | None = None  # ``ngrams`` features: the token n-grams counted after the vector

    @property
    def is_topic(self) -> bool:
        return self.coef.ndim == 2

    @property
    def reads_tokens(self) -> bool:
        return self.featurizer == "ngrams"

    def logits(self, vectors: np.ndarray, tokens: sparse.csr_matrix | None = None) -> np.ndarray:
        """``tokens``: the texts' n-gram features under this scorer's ``ngrams`` (``ngrams.features``)."""
        features = featurize(vectors, self.featurizer, tokens)
        return np.asarray(features @ self.coef + self.intercept)

    def probabilities(self, vectors: np.ndarray, tokens: sparse.csr_matrix | None = None) -> np.ndarray:
        """Topic heads: (n, labels) probabilities."""
        z = self.logits(vectors, tokens)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        probabilities: np.ndarray = e / e.sum(axis=1, keepdims=True)
        return probabilities

    def score(self, vectors: np.ndarray, tokens: sparse.csr_matrix | None = None) -> np.ndarray:
        scores: np.ndarray
        if self.is_topic:
            scores = self.probabilities(vectors, tokens).max(axis=1)
        else:
            scores = 1.0 / (1.0 + np.exp(-self.logits(vectors, tokens).ravel()))
        return scores


def scorer_of(head: Head) -> LinearScorer:
    return LinearScorer(
        head.featurizer,
        head.model.coef_[0].astype(np.float32),
        float(head.model.intercept_[0]),
        ngrams=head.ngrams,
    )


def topic_scorer_of(head: TopicHead) -> LinearScorer:
    """Weights for every label, also those with no answers yet (they never win)."""
    model = head.model
    dim = model.coef_.shape[1]
    coef = np.zeros((dim, len(head.labels)), dtype=np.float32)
    intercept = np.full(len(head.labels), -1e4, dtype=np.float32)
    if len(model.classes_) == 2:  # scikit-learn keeps one column for two classes
        a, b = model.classes_
        coef[:, b], intercept[b] = model.coef_[0], model.intercept_[0]
        intercept[a] = 0.0
    else:
        for j, c in enumerate(model.classes_):
            coef[:, c], intercept[c] = model.coef_[j], model.intercept_[j]
    return LinearScorer("embedding", coef, intercept, list(head.labels))


def save_scorer(scorer: LinearScorer, path: Path) -> None:
    from trackers.ml.storage import write_atomic

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            arrays: dict[str, Any] = {
                "coef": scorer.coef,
                "intercept": np.asarray(scorer.intercept, dtype=np.float32),
                "featurizer": scorer.featurizer,
                "labels": np.asarray(scorer.labels, dtype=str),
                **(scorer.ngrams.arrays() if scorer.ngrams is not None else {}),
            }
            np.savez(fh, **arrays)

    write_atomic(path, write)


def load_scorer(path: Path) -> LinearScorer:
    with np.load(path) as z:
        intercept = z["intercept"]
        labels = [str(x) for x in z["labels"]] if "labels" in z.files else []
        return LinearScorer(
            str(z["featurizer"]),
            z["coef"],
            intercept if intercept.ndim else float(intercept),
            labels,
            Ngrams.from_arrays(z),
        )
