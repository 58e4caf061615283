"""Replay the labeling loop against a labeled data set with an oracle, to measure learning curves.

Runs the same selection and training functions as the app. F1 is measured on a disjoint
evaluation part of the data at the threshold the app itself chooses; for topic trackers it is the
macro-F1 over the labels of the most likely label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labeling.ml.selection import cold_start, next_round, topic_round
from serving.ml.training import (
    background_sample,
    featurize,
    prf,
    topic_report,
    topic_scorer_of,
    train_binary,
    train_topic,
)


@dataclass(frozen=True)
class SimulationSpec:
    seeds: int = 5
    rounds: int = 4
    round_size: int = 25
    repeats: int = 5
    eval_fraction: float = 1 / 3
    target_precision: float = 0.8
    seed: int = 0


def _one_run(vectors, y, texts, spec: SimulationSpec, strategy: str, rep: int) -> list[dict]:
    rng = np.random.default_rng(spec.seed + rep)
    order = rng.permutation(len(y))
    n_eval = int(len(y) * spec.eval_fraction)
    ev, pool = order[:n_eval], order[n_eval:]
    pv, py = vectors[pool], y[pool]
    ptexts = [texts[i] for i in pool] if texts is not None else None
    etexts = [texts[i] for i in ev] if texts is not None else None
    positives = np.flatnonzero(py == 1)
    if len(positives) < spec.seeds:
        raise ValueError(f"only {len(positives)} positives in the pool; {spec.seeds} seeds needed")
    labeled = list(rng.choice(positives, spec.seeds, replace=False))
    curve = []
    head = None
    for r in range(spec.rounds):
        exclude = np.asarray(labeled)
        if strategy == "random":
            avail = np.setdiff1d(np.arange(len(py)), exclude)
            picks = [int(i) for i in rng.choice(avail, spec.round_size, replace=False)]
        elif r == 0 or head is None:
            picks = [
                p.index
                for p in cold_start(
                    pv, pv[labeled[: spec.seeds]], size=spec.round_size, rng=rng, exclude=exclude
                )
            ]
        else:
            scores = head.score(pv, ptexts)
            picks = [
                p.index
                for p in next_round(
                    pv, scores, head.threshold, size=spec.round_size, rng=rng, exclude=exclude
                )
            ]
        labeled += picks
        lab = np.asarray(labeled)
        yl = py[lab]
        head = None
        f1 = 0.0
        if 0 < yl.sum() < len(yl):
            bg = background_sample(len(py), lab)
            head = train_binary(
                pv[lab],
                yl,
                texts=[ptexts[i] for i in lab] if ptexts else None,
                target_precision=spec.target_precision,
                background_vectors=pv[bg],
                background_texts=[ptexts[i] for i in bg] if ptexts else None,
            )
            predicted = (
                head.model.predict_proba(featurize(vectors[ev], etexts, head.featurizer))[:, 1]
                >= head.threshold
            )
            f1 = prf(y[ev], predicted)[2]
        curve.append({"labels": len(labeled), "f1": f1, "featurizer": head.featurizer if head else None})
    return curve


def _one_topic_run(
    vectors, y, labels: list[str], spec: SimulationSpec, strategy: str, rep: int
) -> list[dict]:
    """A topic tracker's loop: ``spec.seeds`` examples spread over the labels, then rounds."""
    rng = np.random.default_rng(spec.seed + rep)
    order = rng.permutation(len(y))
    n_eval = int(len(y) * spec.eval_fraction)
    ev, pool = order[:n_eval], order[n_eval:]
    pv, py = vectors[pool], y[pool]
    labeled = []
    for i in range(max(spec.seeds, len(labels))):  # at least one example of every label, as the form asks
        members = np.setdiff1d(np.flatnonzero(py == i % len(labels)), labeled)
        labeled.append(int(rng.choice(members)))
    curve, scorer = [], None
    for _ in range(spec.rounds):
        exclude = np.asarray(labeled)
        if strategy == "random":
            avail = np.setdiff1d(np.arange(len(py)), exclude)
            picks = [int(i) for i in rng.choice(avail, spec.round_size, replace=False)]
        elif scorer is None:
            found = cold_start(pv, pv[labeled], size=spec.round_size, rng=rng, exclude=exclude)
            picks = [p.index for p in found]
        else:
            proba = scorer.probabilities(pv)
            picks = [p.index for p in topic_round(pv, proba, size=spec.round_size, rng=rng, exclude=exclude)]
        labeled += picks
        lab = np.asarray(labeled)
        scorer = topic_scorer_of(train_topic(pv[lab], py[lab], labels, folds=0))
        predicted = np.argmax(scorer.probabilities(vectors[ev]), axis=1)
        curve.append(
            {
                "labels": len(labeled),
                "f1": topic_report(y[ev], predicted, labels)["f1"],
                "featurizer": "embedding",
            }
        )
    return curve


def simulate(
    vectors: np.ndarray,
    y: np.ndarray,
    texts: list[str] | None,
    spec: SimulationSpec,
    strategy: str,
    *,
    topic_labels: list[str] | None = None,
) -> dict:
    """Mean and spread of F1 over ``spec.repeats`` runs, with the learning curve.

    With ``topic_labels``, ``y`` holds label indices and the loop is a topic tracker's.
    """
    if topic_labels:
        runs = [
            _one_topic_run(vectors, np.asarray(y), topic_labels, spec, strategy, rep)
            for rep in range(spec.repeats)
        ]
    else:
        runs = [_one_run(vectors, np.asarray(y), texts, spec, strategy, rep) for rep in range(spec.repeats)]
    f1 = np.array([[p["f1"] for p in run] for run in runs])
    return {
        "f1_mean": round(float(f1[:, -1].mean()), 4),
        "f1_std": round(float(f1[:, -1].std()), 4),
        "curve": [
            {
                "labels": runs[0][i]["labels"],
                "f1_mean": round(float(f1[:, i].mean()), 4),
                "f1_std": round(float(f1[:, i].std()), 4),
            }
            for i in range(f1.shape[1])
        ],
        "featurizers": sorted({p["featurizer"] for run in runs for p in run if p["featurizer"]}),
    }
