"""Replay the app's learning loop against labeled data with an oracle: the product, measured.

Every simulated tracker goes through ``labeling.ml.loop`` as the app's services do, round by round:

1. the first round is ``loop.plan_round`` with no head (the app's ``create_tracker``): neighbours of
   the examples, random texts; example sentences found in the data are answers from the start
   (their label, strategy ``loop.EXAMPLE``), typed ones are only queries (and, for concept trackers,
   the ``example_vectors`` of ``loop.train``);
2. the oracle answers every card with the truth, under the card's strategy;
3. ``loop.train`` on every answer so far (``run_training``), then ``loop.plan_round`` from its head
   at its own threshold (the threshold in use without an owner override), or the fallback round
   when the answers cannot train a head yet, exactly as the app does.

The data are split once per run: a random ``eval_fraction`` is held out as the truth, the rest is
the tracker's pool. After every round the simulation records F1 on the held-out part at the app's
threshold and at the best threshold, and the estimates the app would show (``loop.evidence`` and
``labeling.ml.estimates``) beside their truth on the held-out part and over the pool (what the
estimates literally estimate). The ``random`` strategy is the same loop (same split, seeds and
training) with each round's cards drawn uniformly from the pool's unshown, unanswered entries.
"""

from __future__ import annotations

import functools
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import sparse
from threadpoolctl import threadpool_limits

from labeling.ml import loop, selection, training
from labeling.ml.estimates import concept_estimates, topic_estimates
from labeling.ml.promotion import promotion_report
from labeling.ml.selection import Pick
from labeling.ml.training import Head, prf, topic_report

COVERAGE_GOAL = 0.9
THRESHOLD_GAP_GOAL = 0.03
BEHIND_RANDOM = 0.02  # a round where ours is this far below random is flagged

Point = dict[str, Any]  # one simulated round: answers so far, held-out truth, the app's estimates


@dataclass(frozen=True)
class SimulationSpec:
    seeds: int = 5  # example sentences (topics: at least one per label)
    rounds: int = 4
    round_size: int = 25
    repeats: int = 5
    eval_fraction: float = 1 / 3
    target_precision: float = 0.8
    seed: int = 0
    typed_examples: bool = False  # examples typed by the owner: taken out of the pool, never answers


@contextmanager
def typed_examples_train(value: bool) -> Iterator[None]:
    """Run the loop with ``loop.TYPED_EXAMPLES_TRAIN`` set to ``value`` (the typed-examples comparison)."""
    before = loop.TYPED_EXAMPLES_TRAIN
    loop.TYPED_EXAMPLES_TRAIN = value
    try:
        yield
    finally:
        loop.TYPED_EXAMPLES_TRAIN = before


def best_f1(y: np.ndarray, scores: np.ndarray) -> float:
    """The highest F1 of ``scores >= t`` against ``y`` over every threshold ``t``."""
    y = np.asarray(y) == 1
    positives = int(y.sum())
    if not positives or not len(scores):
        return 0.0
    order = np.argsort(-np.asarray(scores), kind="stable")
    ranked = np.asarray(scores)[order]
    tp = np.cumsum(y[order])
    predicted = np.arange(1, len(y) + 1)
    cut = np.r_[ranked[1:] != ranked[:-1], True]  # only between distinct scores
    return float(np.max(2 * tp[cut] / (predicted[cut] + positives)))


def _answers(answered: dict[int, tuple[int, str, float]]) -> loop.Answers:
    """The app's ``answers_of``: one row per answered entry, ordered by entry."""
    if not answered:
        return loop.Answers.empty()
    rows = np.array(sorted(answered), dtype=np.int64)
    return loop.Answers(
        rows,
        np.array([answered[int(i)][0] for i in rows], dtype=np.int64),
        np.array([answered[int(i)][1] for i in rows], dtype="<U16"),
        np.array([answered[int(i)][2] for i in rows], dtype=np.float64),
    )


def _summary(estimate: dict[str, Any]) -> dict[str, Any]:
    return {"value": estimate["value"], "ci": estimate["ci"]}


class _Data:
    """One run's split: the pool (as the app builds it), the held-out truth and the examples."""

    def __init__(
        self,
        vectors: np.ndarray,
        y: np.ndarray,
        spec: SimulationSpec,
        rng: np.random.Generator,
        topic_labels: list[str] | None,
        member_of: np.ndarray | None,
        token_ids: Sequence[Sequence[int]] | None = None,
    ):
        n = len(y)
        self.held_out_tokens: sparse.csr_matrix | None = None
        self.example_token_ids: list[Sequence[int]] | None = None
        order = rng.permutation(n)
        n_eval = int(n * spec.eval_fraction)
        held_out, pool = order[:n_eval], order[n_eval:]
        documents = member_of is not None
        kind = "topic" if topic_labels else "concept"
        # Examples: drawn from the pool's members of each label in turn (concept: its positives).
        wanted = list(range(len(topic_labels))) if topic_labels else [1]
        count = max(spec.seeds, len(wanted))
        picked: list[int] = []
        for i in range(count):
            c = wanted[i % len(wanted)]
            members = np.setdiff1d(pool[y[pool] == c], picked)
            if not len(members):
                what = f"'{topic_labels[c]}'" if topic_labels else "positive"
                raise ValueError(f"too few {what} entries in the pool for {count} examples")
            picked.append(int(rng.choice(members)))
        self.example_classes = [int(y[i]) for i in picked]
        # Typed examples are not in the data: they leave the pool. Documents never answer an example.
        found = not spec.typed_examples and not documents
        if spec.typed_examples and not documents:
            pool = np.setdiff1d(pool, picked)
        self.truth = y[pool]
        self.held_out_y = y[held_out]
        if documents:
            assert member_of is not None
            lines = [np.flatnonzero(np.isin(member_of, part)) for part in (pool, held_out)]
            where = [np.full(n, -1, dtype=np.int64) for _ in range(2)]
            for w, part in zip(where, (pool, held_out), strict=True):
                w[part] = np.arange(len(part))
            self.pool = loop.document_pool(vectors[lines[0]], where[0][member_of[lines[0]]], len(pool))
            held = loop.document_pool(vectors[lines[1]], where[1][member_of[lines[1]]], len(held_out))
            self.held_out_vectors = held.vectors
            # A document tracker's example is a sentence: the most typical line of a member document.
            examples = []
            for i in picked:
                mine = np.flatnonzero(member_of == i)
                centre = vectors[mine].sum(axis=0)
                examples.append(int(mine[np.argmax(vectors[mine] @ centre)]))
            self.example_vectors = np.asarray(vectors[examples], dtype=np.float32)
        else:
            self.pool = loop.Pool(np.asarray(vectors[pool], dtype=np.float32))
            self.held_out_vectors = np.asarray(vectors[held_out], dtype=np.float32)
            self.example_vectors = np.asarray(vectors[picked], dtype=np.float32)
            if token_ids is not None:  # as the app's segment pools: n-grams of the pool's own vocabulary
                self.pool = self.pool.with_tokens([token_ids[i] for i in pool])
                if self.pool.ngrams is not None:
                    self.held_out_tokens = self.pool.ngrams.features([token_ids[i] for i in held_out])
                self.example_token_ids = [token_ids[i] for i in picked]
        self.spec = loop.Spec(
            kind=kind,
            labels=tuple(topic_labels or ()),
            round_size=spec.round_size,
            target_precision=spec.target_precision,
        )
        where_in_pool = {int(e): k for k, e in enumerate(pool)}
        self.answered: dict[int, tuple[int, str, float]] = {}
        if found:
            for i in picked:
                self.answered[where_in_pool[i]] = (int(y[i]), loop.EXAMPLE, np.nan)
        # What ``loop.train`` gets as typed examples: the app passes them for concept sentence trackers.
        typed_rows = spec.typed_examples and kind == "concept" and not documents
        self.typed_vectors = self.example_vectors if typed_rows else self.example_vectors[:0]
        self.typed_ids = self.example_token_ids if typed_rows else None


def _measure(data: _Data, trained: loop.Trained, answers: loop.Answers) -> dict[str, Any]:
    """Held-out truth, the app's estimates and their truth over the pool, for one trained round."""
    point: Point = {"head": trained.head is not None, "reason": trained.reason}
    spec = data.spec
    if trained.head is None:
        point["f1"] = 0.0  # no head: the tracker matches nothing yet
        return point
    assert trained.scorer is not None and trained.scores is not None
    ev = loop.evidence(trained, answers, len(data.pool))
    if spec.kind == "topic":
        predicted = np.argmax(trained.scorer.probabilities(data.held_out_vectors), axis=1)
        report = topic_report(data.held_out_y, predicted, spec.classes)
        estimate = topic_estimates(ev, spec.classes)  # type: ignore[arg-type]
        point.update(
            f1=report["f1"],
            truth={"accuracy": report["accuracy"]},
            pool_truth={"accuracy": float(np.mean(np.argmax(trained.scores, axis=1) == data.truth))},
            estimate={"accuracy": _summary(estimate["accuracy"])},
        )
        return point
    assert isinstance(trained.head, Head)
    threshold = trained.head.threshold
    scores = trained.scorer.score(
        data.held_out_vectors, data.held_out_tokens if trained.scorer.reads_tokens else None
    )
    estimate = concept_estimates(ev, threshold)  # type: ignore[arg-type]
    point.update(
        f1=prf(data.held_out_y, scores >= threshold)[2],
        f1_best=best_f1(data.held_out_y, scores),
        threshold=threshold,
        featurizer=trained.head.featurizer,
        examples_trained=trained.head.examples,
        truth=_truth(data.held_out_y, scores >= threshold),
        pool_truth=_truth(data.truth, _placed(trained, answers) >= threshold),
        estimate={m: _summary(estimate[m]) for m in ("precision", "recall", "f1")},
        precision_exact=estimate["precision_exact"],
    )
    return point


def _placed(trained: loop.Trained, answers: loop.Answers) -> np.ndarray:
    """The pool's scores as the estimates place them: an answered text by the model that did not see
    it (its out-of-fold score, where it has one), the others by the head."""
    assert trained.scores is not None and isinstance(trained.head, Head)
    placed = np.array(trained.scores, dtype=np.float64)
    if trained.head.oof is not None and len(answers):
        oof = np.asarray(trained.head.oof, dtype=np.float64)
        placed[answers.rows] = np.where(np.isfinite(oof), oof, placed[answers.rows])
    return placed


def _truth(y: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """Precision, recall and F1; None where undefined (nothing predicted, nothing to find)."""
    p, r, f = prf(y, predicted)
    return {
        "precision": p if predicted.any() else None,
        "recall": r if (y == 1).any() else None,
        "f1": f if predicted.any() or (y == 1).any() else None,
    }


def one_run(
    vectors: np.ndarray,
    y: np.ndarray,
    spec: SimulationSpec,
    strategy: str,
    rep: int,
    *,
    topic_labels: list[str] | None = None,
    member_of: np.ndarray | None = None,
    token_ids: Sequence[Sequence[int]] | None = None,
) -> list[Point]:
    """One simulated tracker: a point per round (answers so far, held-out F1, the app's estimates)."""
    rng = np.random.default_rng(spec.seed + rep)
    data = _Data(vectors, np.asarray(y), spec, rng, topic_labels, member_of, token_ids)
    shown: list[int] = []
    trained: loop.Trained | None = None  # the first round is the app's create_tracker: no head yet
    points = []
    for r in range(spec.rounds):
        answers = _answers(data.answered)
        if strategy == "random":
            taken = np.union1d(np.asarray(shown, dtype=np.int64), answers.rows)
            free = np.setdiff1d(np.arange(len(data.pool)), taken)
            chosen = rng.choice(free, min(spec.round_size, len(free)), replace=False)
            picks = [Pick(int(i), "random", len(chosen) / len(free)) for i in chosen]
        else:
            picks = loop.plan_round(
                data.pool,
                answers,
                data.spec,
                shown=np.asarray(shown, dtype=np.int64),
                trained=trained,
                threshold=trained.threshold if trained is not None else None,
                example_vectors=data.example_vectors,
                example_classes=np.asarray(data.example_classes, dtype=np.int64),
                keyword_hits=None,
                rng=rng,
            )
        shown += [p.index for p in picks]
        for p in picks:
            data.answered[p.index] = (int(data.truth[p.index]), p.strategy, p.probability)
        answers = _answers(data.answered)
        trained = loop.train(
            data.pool,
            answers,
            data.spec,
            example_vectors=data.typed_vectors,
            example_token_ids=data.typed_ids,
        )
        point = {
            "round": r + 1,
            "labels": len(answers),
            "cards": len(shown),
            "strategies": sorted({p.strategy for p in picks}),
        }
        point.update(_measure(data, trained, answers))
        points.append(point)
    if (
        strategy == "ours"
        and data.spec.kind == "concept"
        and trained is not None
        and trained.head is not None
    ):
        points[-1]["check"] = _check_round(data, trained, shown, rng)
    return points


def _check_round(data: _Data, trained: loop.Trained, shown: list[int], rng: np.random.Generator) -> Point:
    """After the last round, what the tracker page's *Check what it misses* does: a check round
    (``loop.plan_check``) from the last head at its threshold, answered, then trained on and
    measured as a round is."""
    answers = _answers(data.answered)
    assert trained.scores is not None and trained.threshold is not None
    picks = loop.plan_check(
        answers,
        shown=np.asarray(shown, dtype=np.int64),
        scores=trained.scores,
        threshold=trained.threshold,
        rng=rng,
    )
    for p in picks:
        data.answered[p.index] = (int(data.truth[p.index]), p.strategy, p.probability)
    answers = _answers(data.answered)
    after = loop.train(
        data.pool, answers, data.spec, example_vectors=data.typed_vectors, example_token_ids=data.typed_ids
    )
    point: Point = {"cards": len(picks), "found": int(sum(data.truth[p.index] for p in picks))}
    point.update(_measure(data, after, answers))
    return point


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def coverage(runs: list[list[Point]], truth: str = "truth") -> dict[str, Any]:
    """Per estimated metric: the share of (run, round) points whose 95% interval holds ``truth``."""
    out: dict[str, Any] = {}
    for point in (p for run in runs for p in run):
        for metric, est in point.get("estimate", {}).items():
            row = out.setdefault(metric, {"points": 0, "covered": 0, "no_interval": 0})
            actual = point[truth].get(metric)
            if est["ci"] is None or actual is None:
                row["no_interval"] += 1
                continue
            row["points"] += 1
            row["covered"] += int(est["ci"][0] - 1e-9 <= actual <= est["ci"][1] + 1e-9)
    for row in out.values():
        row["share"] = round(row["covered"] / row["points"], 4) if row["points"] else None
    return out


def summarize(runs: list[list[Point]]) -> dict[str, Any]:
    """Learning curve, interval coverage and gaps over the runs of one strategy."""
    f1 = np.array([[p["f1"] for p in run] for run in runs])
    curve = []
    for i in range(f1.shape[1]):
        at = [run[i] for run in runs]
        best = [p["f1_best"] for p in at if "f1_best" in p]
        curve.append(
            {
                "labels": at[0]["labels"],
                "f1_mean": round(float(f1[:, i].mean()), 4),
                "f1_std": round(float(f1[:, i].std()), 4),
                "f1_best_mean": _mean(best),
                "heads": sum(p["head"] for p in at),
            }
        )
    points = [p for run in runs for p in run if p["head"]]
    shown_metric = "f1" if any("f1" in p.get("estimate", {}) for p in points) else "accuracy"
    shown_gap = [
        abs(p["estimate"][shown_metric]["value"] - p["truth"][shown_metric])
        for p in points
        if p["estimate"][shown_metric]["value"] is not None and p["truth"][shown_metric] is not None
    ]
    threshold_gap = [p["f1_best"] - p["f1"] for p in points if "f1_best" in p]
    final = [run[-1] for run in runs if run[-1]["head"] and "f1_best" in run[-1]]
    last = [run[-1] for run in runs if run[-1]["head"]]
    final_gap = [
        abs(p["estimate"][shown_metric]["value"] - p["truth"][shown_metric])
        for p in last
        if p["estimate"][shown_metric]["value"] is not None and p["truth"][shown_metric] is not None
    ]
    final_width = [
        p["estimate"][shown_metric]["ci"][1] - p["estimate"][shown_metric]["ci"][0]
        for p in last
        if p["estimate"][shown_metric]["ci"] is not None
    ]
    return {
        "f1_mean": round(float(f1[:, -1].mean()), 4),
        "f1_std": round(float(f1[:, -1].std()), 4),
        "check_round": check_report(runs),
        "curve": curve,
        "coverage": coverage(runs),
        "coverage_pool": coverage(runs, "pool_truth"),
        "shown_metric": shown_metric,
        "shown_gap_mean": _mean(shown_gap),
        "shown_gap_final": _mean(final_gap),
        "width_final_median": round(float(np.median(final_width)), 4) if final_width else None,
        "threshold_gap_mean": _mean(threshold_gap),
        "threshold_gap_final": _mean([p["f1_best"] - p["f1"] for p in final]),
        "featurizers": sorted({p["featurizer"] for p in points if p.get("featurizer")}),
        "promotion": promotion_report(runs, shown_metric),
        "runs": runs,
    }


def _width(point: Point, metric: str) -> float | None:
    ci = point.get("estimate", {}).get(metric, {}).get("ci")
    return ci[1] - ci[0] if ci else None


def check_report(runs: list[list[Point]]) -> dict[str, Any] | None:
    """What one check round after the last round did, over the runs that played one: recall's
    interval width before and after (medians), whether the interval after covers the held-out
    recall, and F1 before and after."""
    pairs = [(run[-1], run[-1]["check"]) for run in runs if run and run[-1].get("check", {}).get("head")]
    widths = [(_width(b, "recall"), _width(a, "recall")) for b, a in pairs]
    widths = [(b, a) for b, a in widths if b is not None and a is not None]
    if not widths:
        return None
    after = [a for _, a in pairs]
    covered = coverage([after])
    return {
        "runs": len(pairs),
        "cards_mean": _mean([a["cards"] for a in after]),
        "found_mean": _mean([a["found"] for a in after]),
        "recall_width_before": round(float(np.median([b for b, _ in widths])), 4),
        "recall_width_after": round(float(np.median([a for _, a in widths])), 4),
        "coverage": {m: row["share"] for m, row in covered.items()},
        "f1_before": _mean([b["f1"] for b, _ in pairs]),
        "f1_after": _mean([a["f1"] for a in after]),
    }


def behind_random(
    ours: dict[str, Any], rand: dict[str, Any], margin: float = BEHIND_RANDOM
) -> list[dict[str, Any]]:
    """The rounds where our mean F1 is more than ``margin`` below random's.

    With the runs at hand, each flag carries the standard error of the paired difference (the two
    strategies share every run's split and examples), to tell a real deficit from noise.
    """
    out = []
    for i, (a, b) in enumerate(zip(ours["curve"], rand["curve"], strict=True)):
        if a["f1_mean"] >= b["f1_mean"] - margin:
            continue
        flag = {"round": i + 1, "labels": a["labels"], "ours": a["f1_mean"], "random": b["f1_mean"]}
        if len(ours.get("runs", ())) > 1 and len(ours["runs"]) == len(rand.get("runs", ())):
            diff = np.array(
                [x[i]["f1"] - y[i]["f1"] for x, y in zip(ours["runs"], rand["runs"], strict=True)]
            )
            flag["paired_se"] = round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 4)
        out.append(flag)
    return out


def simulate(
    vectors: np.ndarray,
    y: np.ndarray,
    spec: SimulationSpec,
    strategy: str,
    *,
    topic_labels: list[str] | None = None,
    member_of: np.ndarray | None = None,
    workers: int = 1,
    token_ids: Sequence[Sequence[int]] | None = None,
) -> dict[str, Any]:
    """``spec.repeats`` runs of one strategy (``ours`` or ``random``), summarised.

    Concept: ``y`` is 1 for 'yes'. Topic (``topic_labels``): ``y`` indexes the labels, and
    ``len(topic_labels)`` marks rows answered 'none'. Documents (``member_of``): ``vectors`` are
    the documents' lines, ``member_of`` the document of each line, ``y`` per document.
    ``workers`` > 1 runs the repeats in that many forked processes (same results).
    """
    if strategy not in ("ours", "random"):
        raise ValueError(f"unknown strategy {strategy!r}")
    job = functools.partial(
        one_run,
        vectors,
        y,
        spec,
        strategy,
        topic_labels=topic_labels,
        member_of=member_of,
        token_ids=token_ids,
    )
    if workers <= 1 or spec.repeats <= 1:
        with threadpool_limits(1):  # several times faster: the loop's matrices are small
            return summarize([job(rep) for rep in range(spec.repeats)])
    # Runs are independent (each has its own seed): forked workers read the arrays without copying
    # them, and see the loop's module state (e.g. TYPED_EXAMPLES_TRAIN) as it is now.
    global _JOB
    _JOB = job
    try:
        with multiprocessing.get_context("fork").Pool(min(workers, spec.repeats)) as pool:
            runs = pool.map(_job_run, range(spec.repeats))
    finally:
        _JOB = None
    return summarize(runs)


_JOB: Callable[[int], list[Point]] | None = None


def _job_run(rep: int) -> list[Point]:
    assert _JOB is not None
    with threadpool_limits(1):
        return _JOB(rep)


def settings_of(spec: SimulationSpec) -> dict[str, Any]:
    """What a result was measured with: the simulation's spec and the loop's own constants."""
    return {
        **asdict(spec),
        "typed_examples_train": loop.TYPED_EXAMPLES_TRAIN,
        "round_mix": selection.DEFAULT_MIX,
        "background_rows": training.BACKGROUND,
        "regularisation_c": training.REGULARISATION_C,
        "threshold": "the trained head's (no owner override)",
        "keyword_hits": None,
    }
