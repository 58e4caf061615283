"""Replay the selection + training loop on a labeled CSV with an oracle; print the learning curves."""

from __future__ import annotations

import csv
import hashlib
import json
import time
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from labeling.ml.simulation import SimulationSpec, simulate
from trackers import encoders
from trackers.ml.storage import write_atomic


def cached_vectors(path: Path, texts: list[str]) -> np.ndarray:
    """Vectors of ``texts`` from the configured encoder, cached per file content and encoder."""
    encoder = encoders.get_encoder()
    digest = hashlib.sha256(path.read_bytes() + encoder.encoder_id.encode()).hexdigest()[:20]
    cache = Path(settings.ARTIFACT_ROOT) / "simulation-cache" / f"{path.stem}-{digest}.npy"
    if cache.exists():
        return np.load(cache)
    vectors = encoder.encode(texts)

    def save(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, vectors)

    write_atomic(cache, save)
    return vectors


class Command(BaseCommand):
    help = "Measure our active learning against random selection on a labeled CSV (text,label columns)."

    def add_arguments(self, parser):
        parser.add_argument("--file", required=True, help="CSV with 'text' and 'label' columns")
        parser.add_argument(
            "--positive", action="append", required=True, help="the label that means 'yes' (repeatable)"
        )
        parser.add_argument("--seeds", type=int, default=5)
        parser.add_argument("--rounds", type=int, default=4)
        parser.add_argument("--round-size", type=int, default=25)
        parser.add_argument("--repeats", type=int, default=5)
        parser.add_argument("--target-precision", type=float, default=0.8)
        parser.add_argument(
            "--output", help="JSON file to add these runs to (same dataset+positive replaced)"
        )
        parser.add_argument(
            "--topic",
            action="store_true",
            help="one topic tracker whose labels are the --positive labels (rows of other labels are left "
            "out); scored by macro-F1 of the most likely label",
        )

    def handle(self, *args, **opts):
        path = Path(opts["file"])
        if not path.exists():
            raise CommandError(f"{path} does not exist")
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not {"text", "label"} <= set(reader.fieldnames or []):
                raise CommandError(f"{path} needs 'text' and 'label' columns; found {reader.fieldnames}")
            rows = [r for r in reader if r["text"].strip()]
        texts = [r["text"] for r in rows]
        labels = np.array([r["label"] for r in rows])
        known = set(labels)
        for positive in opts["positive"]:
            if positive not in known:
                raise CommandError(f"label '{positive}' is not in {path.name}")
        vectors = cached_vectors(path, texts)
        spec = SimulationSpec(
            seeds=opts["seeds"],
            rounds=opts["rounds"],
            round_size=opts["round_size"],
            repeats=opts["repeats"],
            target_precision=opts["target_precision"],
        )
        if opts["topic"]:
            self._topic(path, vectors, labels, opts["positive"], spec, opts["output"])
            return
        runs = []
        for positive in opts["positive"]:
            y = (labels == positive).astype(np.int64)
            t0 = time.perf_counter()
            ours = simulate(vectors, y, texts, spec, "ours")
            rand = simulate(vectors, y, texts, spec, "random")
            run = {
                "dataset": path.parent.name if path.stem == "dev" else path.stem,
                "file": str(path),
                "positive": positive,
                "prevalence": round(float(y.mean()), 4),
                "seeds": spec.seeds,
                "rounds": spec.rounds,
                "round_size": spec.round_size,
                "repeats": spec.repeats,
                "target_precision": spec.target_precision,
                "ours": ours,
                "random": rand,
                "seconds": round(time.perf_counter() - t0, 1),
            }
            runs.append(run)
            self._print(run)
        if opts["output"]:
            self._save(Path(opts["output"]), runs)

    def _topic(self, path: Path, vectors, labels, names: list[str], spec: SimulationSpec, output) -> None:
        if len(names) < 2:
            raise CommandError("a topic simulation needs at least two --positive labels")
        keep = np.flatnonzero(np.isin(labels, names))
        y = np.array([names.index(label) for label in labels[keep]])
        t0 = time.perf_counter()
        run = {
            "dataset": path.parent.name if path.stem == "dev" else path.stem,
            "file": str(path),
            "kind": "topic",
            "positive": "topic: " + ", ".join(names),
            "prevalence": round(1 / len(names), 4),
            "rows": len(keep),
            "metric": "macro-F1 of the most likely label",
            "seeds": max(spec.seeds, len(names)),
            "rounds": spec.rounds,
            "round_size": spec.round_size,
            "repeats": spec.repeats,
            "ours": simulate(vectors[keep], y, None, spec, "ours", topic_labels=names),
            "random": simulate(vectors[keep], y, None, spec, "random", topic_labels=names),
        }
        run["seconds"] = round(time.perf_counter() - t0, 1)
        self._print(run)
        if output:
            self._save(Path(output), [run])

    def _print(self, run: dict) -> None:
        self.stdout.write(
            f"\n{run['dataset']} · positive '{run['positive']}' (prevalence {run['prevalence']:.1%}) · "
            f"F1 on a held-out third at the app's own threshold, {run['repeats']} repeats"
        )
        self.stdout.write(f"{'labels':>8} {'ours':>16} {'random':>16}")
        for a, b in zip(run["ours"]["curve"], run["random"]["curve"], strict=True):
            self.stdout.write(
                f"{a['labels']:>8} {a['f1_mean']:>9.3f} ± {a['f1_std']:.3f} {b['f1_mean']:>9.3f} ± {b['f1_std']:.3f}"
            )

    def _save(self, output: Path, runs: list[dict]) -> None:
        existing = json.loads(output.read_text()) if output.exists() else []
        keys = {(r["dataset"], r["positive"]) for r in runs}
        merged = [r for r in existing if (r["dataset"], r["positive"]) not in keys] + runs
        write_atomic(output, lambda tmp: Path(tmp).write_text(json.dumps(merged, indent=2) + "\n"))
        self.stdout.write(f"\nwrote {len(runs)} run(s) to {output}")
