"""Labeling speed: choosing a round over 100k segments, and training a head on 1,000 labels.

Each is timed next to a plain baseline in the same run: random selection, and one
logistic-regression fit without cross-validation or feature search. Uses the Banking77 vectors
(tiled with noise to 100k) so scores and neighbours look like real ones. Then the whole database
path in a scratch SQLite workspace of 100k segments: creating a tracker (which chooses round 1)
and choosing a later round from a trained head. Writes bench/results/labeling.json and prints a table.

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


def database_path(vectors: np.ndarray, texts: list[str], labels: np.ndarray, n: int) -> dict:
    """Round 1 and a later round through the services, on n segments stored like real ones."""
    import hashlib

    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from labeling import game
    from labeling import services as loop_services
    from labeling.ml import loop
    from labeling.ml.training import scorer_of, train_binary
    from trackers import services
    from trackers.encoders import get_encoder
    from trackers.models import Dataset, Document, Segment

    call_command("migrate", verbosity=0)
    rng = np.random.default_rng(1)
    user = get_user_model().objects.create_user("bench")
    ws = services.create_workspace(name="bench", owner=user)
    ds = services.create_dataset(workspace=ws, name="100k")
    docs = Document.objects.bulk_create(
        [Document(dataset=ds, title=f"call {i}") for i in range(n // 10)], batch_size=5000
    )
    segs = []
    for i in range(n):
        text = f"{texts[i % len(texts)]} #{i}"
        segs.append(
            Segment(
                dataset=ds,
                document=docs[i // 10],
                position=i % 10,
                text=text,
                vector_row=i,
                text_hash=hashlib.sha1(text.encode()).hexdigest(),
            )
        )
    Segment.objects.bulk_create(segs, batch_size=5000)
    v = vectors[np.arange(n) % len(vectors)] + 0.02 * rng.standard_normal((n, vectors.shape[1])).astype(
        np.float32
    )
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    services.vector_store(ds).append(v, get_encoder().encoder_id)
    Dataset.objects.filter(pk=ds.pk).update(vector_count=n, encoder_id=get_encoder().encoder_id)
    ds.refresh_from_db()
    t = time.perf_counter()
    tracker = loop_services.create_tracker(
        workspace=ws,
        user=user,
        name="card arrival",
        datasets=[ds],
        seeds=[texts[i] for i in np.flatnonzero(labels == "card_arrival")[:5]],
    )
    first = time.perf_counter() - t
    pool = game.build_pool(tracker)
    lab = rng.choice(n, 100, replace=False)
    head = train_binary(
        pool.vectors[lab], (labels[lab % len(labels)] == "card_arrival").astype(int) | (np.arange(100) < 10)
    )
    t = time.perf_counter()
    inputs = game.loop_inputs(tracker)  # read the pool, answers and examples, as a training run does
    scorer = scorer_of(head)
    trained = loop.Trained(head, scorer, inputs.arrays.scores(scorer))
    game.fill_round(tracker, inputs=inputs, trained=trained, threshold=head.threshold)
    later = time.perf_counter() - t
    return {"create_tracker_with_round_1_s": round(first, 3), "later_round_s": round(later, 3)}


def main() -> None:
    import tempfile

    scratch = tempfile.mkdtemp(prefix="trackers-bench-")
    # A scratch SQLite workspace; the encoder exported by `manage.py prepare_encoder` is reused.
    os.environ["TRACKERS_ENCODER_DIR"] = os.environ.get(
        "TRACKERS_ENCODER_DIR", str(REPO / "var" / "artifacts" / "encoders" / "all-MiniLM-L6-v2")
    )
    for var in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
        os.environ.pop(var, None)
    os.environ["TRACKERS_DATA_DIR"] = scratch
    os.environ["CELERY_TASK_ALWAYS_EAGER"] = "1"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from sklearn.linear_model import LogisticRegression

    from labeling.ml.selection import cold_start, next_round
    from labeling.ml.training import background_sample, train_binary
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
    bg = background_sample(len(vectors), pick)  # as a training run does: unlabeled rows as weak 'no'
    results["training_1000_labels"] = {
        "ours_embedding_only": timed(lambda: train_binary(vectors[pick], y), 3),
        "ours_as_a_training_run": timed(
            lambda: train_binary(vectors[pick], y, background_vectors=vectors[bg]), 3
        ),
        "baseline_single_fit": timed(
            lambda: LogisticRegression(class_weight="balanced", max_iter=2000).fit(vectors[pick], y), 3
        ),
    }
    results["database_path_100k"] = database_path(vectors, texts, labels, n)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")

    print(f"{'what':<52}{'median s':>12}{'max s':>10}")
    for group in ("selection", "training_1000_labels"):
        for name, r in results[group].items():
            print(f"{group + ' / ' + name:<52}{r['median_s']:>12}{r['max_s']:>10}")
    for name, secs in results["database_path_100k"].items():
        print(f"{'database path 100k / ' + name:<52}{secs:>12}")
    print(f"\nwritten to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
