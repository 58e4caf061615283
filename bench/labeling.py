"""Labeling speed: choosing a round over 100k segments, and training a head on 1,000 labels.

Each is timed next to a plain baseline in the same run: random selection, and one
logistic-regression fit without cross-validation or feature search. Uses the Banking77 vectors
(tiled with noise to 100k) so scores and neighbours look like real ones. Writes
bench/results/labeling.json and prints a table.

    python bench/labeling.py
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "banking77" / "dev.csv"
RESULTS = REPO / "bench" / "results" / "labeling.json"


def timed(fn, repeats: int = 5) -> dict:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"median_s": round(statistics.median(times), 4), "max_s": round(max(times), 4)}


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from sklearn.linear_model import LogisticRegression

    from labeling.ml.selection import cold_start, next_round
    from serving.ml.training import train_binary
    from trackers.encoders import get_encoder

    if not DATA.exists():
        sys.exit(f"{DATA} is absent (the shared data folder is needed)")
    rows = list(csv.DictReader(open(DATA, newline="", encoding="utf-8")))
    texts = [r["text"] for r in rows]
    labels = np.array([r["label"] for r in rows])
    vectors = get_encoder().encode(texts)
    rng = np.random.default_rng(0)

    # 100k segments: the real vectors tiled, each copy nudged so no two are identical.
    n = 100_000
    idx = rng.integers(0, len(vectors), n)
    pool = vectors[idx] + 0.03 * rng.standard_normal((n, vectors.shape[1])).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    seeds = vectors[np.flatnonzero(labels == "card_arrival")[:5]]
    exclude = rng.choice(n, 500, replace=False)
    w = rng.standard_normal(vectors.shape[1]).astype(np.float32)
    scores = 1 / (1 + np.exp(-(pool @ w)))

    results = {"segments": n, "round_size": 25, "cpu_count": os.cpu_count()}
    results["selection"] = {
        "cold_start": timed(lambda: cold_start(pool, seeds, size=25, rng=rng, exclude=exclude)),
        "next_round": timed(lambda: next_round(pool, scores, 0.5, size=25, rng=rng, exclude=exclude)),
        "baseline_random": timed(lambda: rng.choice(np.setdiff1d(np.arange(n), exclude), 25, replace=False)),
    }

    pick = rng.choice(len(vectors), 1000, replace=False)
    y = (labels[pick] == labels[pick][0]).astype(int)
    y[:50] = 1  # about 5% positives, like a concept after a few rounds
    lab_texts = [texts[i] for i in pick]
    results["training_1000_labels"] = {
        "ours_embedding_only": timed(lambda: train_binary(vectors[pick], y), 3),
        "ours_with_feature_search": timed(lambda: train_binary(vectors[pick], y, texts=lab_texts), 3),
        "baseline_single_fit": timed(
            lambda: LogisticRegression(class_weight="balanced", max_iter=2000).fit(vectors[pick], y), 3
        ),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")

    print(f"{'what':<44}{'median s':>12}{'max s':>10}")
    for group in ("selection", "training_1000_labels"):
        for name, r in results[group].items():
            print(f"{group + ' / ' + name:<44}{r['median_s']:>12}{r['max_s']:>10}")
    print(f"\nwritten to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
