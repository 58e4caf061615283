"""Replay the app's learning loop (``labeling.ml.loop``) on labeled data with an oracle; print the curves."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from labeling.ml import loop
from labeling.ml.simulation import (
    BEHIND_RANDOM,
    COVERAGE_GOAL,
    SimulationSpec,
    behind_random,
    settings_of,
    simulate,
    typed_examples_train,
)
from labeling.ml.training import FEATURIZERS
from trackers import encoders
from trackers.ml.storage import write_atomic


def cached_vectors(name: str, texts: list[str]) -> np.ndarray:
    """Vectors of ``texts`` from the configured encoder, each distinct text encoded once and cached."""
    encoder = encoders.get_encoder()
    distinct = list(dict.fromkeys(texts))
    digest = hashlib.sha256("\x00".join([encoder.encoder_id, *distinct]).encode()).hexdigest()[:20]
    cache = Path(settings.ARTIFACT_ROOT) / "simulation-cache" / f"{name}-{digest}.npy"
    if cache.exists():
        vectors = np.load(cache)
    else:
        vectors = encoder.encode(distinct)

        def save(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.save(fh, vectors)

        write_atomic(cache, save)
    row = {t: i for i, t in enumerate(distinct)}
    return vectors[[row[t] for t in texts]]


def git_commit() -> dict:
    """The commit the simulation ran at, and whether the working tree had changes on top of it.

    Results files are left out: a run of several tasks writes its own output between them.
    """
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", ".", ":(exclude)bench/results"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def subsample(n: int, max_rows: int | None) -> np.ndarray:
    """Row indices: all of them, or a deterministic sample of ``max_rows`` in file order."""
    if not max_rows or n <= max_rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, max_rows, replace=False))


def _rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def dump(results: list[dict]) -> str:
    """Indented JSON with every simulated round on one line (the per-run points are many)."""
    lines: dict[str, str] = {}
    results = _rounded(results)
    for result in results:
        for strategy in ("ours", "random"):
            for run in result[strategy].get("runs", []):
                for i, point in enumerate(run):
                    key = f"@@{len(lines)}@@"
                    lines[key] = json.dumps(point, ensure_ascii=False)
                    run[i] = key
    text = json.dumps(results, indent=1, ensure_ascii=False)
    for key, line in lines.items():
        text = text.replace(f'"{key}"', line, 1)
    return text


class Command(BaseCommand):
    help = (
        "Measure the app's learning loop against random selection on labeled data: a CSV (text,label) of "
        "sentences, or a JSONL of conversations (--documents)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--file", help="CSV with 'text' and 'label' columns, or a JSONL")
        parser.add_argument("--positive", action="append", help="the label that means 'yes' (repeatable)")
        parser.add_argument("--report", help="print the table of every task in this results file, and stop")
        parser.add_argument("--seeds", type=int, default=5)
        parser.add_argument("--rounds", type=int, default=4)
        parser.add_argument("--round-size", type=int, default=25)
        parser.add_argument("--repeats", type=int, default=5)
        parser.add_argument("--target-precision", type=float, default=0.8)
        parser.add_argument(
            "--workers", type=int, default=os.cpu_count() or 1, help="processes running the repeats"
        )
        parser.add_argument("--max-rows", type=int, help="a deterministic sample of this many entries")
        parser.add_argument(
            "--output", help="JSON file to add these runs to (entries of the same task replaced)"
        )
        parser.add_argument(
            "--topic",
            action="store_true",
            help="one topic tracker whose labels are the --positive labels; scored by macro-F1 of the most "
            "likely label",
        )
        parser.add_argument(
            "--none",
            action="store_true",
            help="topic: entries of other labels stay in the pool and are answered 'none' (else left out)",
        )
        parser.add_argument(
            "--typed-examples",
            action="store_true",
            help="the examples are typed (taken out of the data, never answers); compares "
            "TYPED_EXAMPLES_TRAIN on and off",
        )
        parser.add_argument(
            "--documents",
            action="store_true",
            help="JSONL of conversations ({label, turns: [{text}]}): one pool entry per conversation",
        )

    def handle(self, *args, **opts):
        if opts["report"]:
            self._report(Path(opts["report"]))
            return
        if not opts["file"] or not opts["positive"]:
            raise CommandError("--file and at least one --positive are required (or --report FILE)")
        path = Path(opts["file"])
        if not path.exists():
            raise CommandError(f"{path} does not exist")
        if opts["none"] and not opts["topic"]:
            raise CommandError("--none is for topic trackers (--topic)")
        if opts["documents"] != (path.suffix == ".jsonl"):
            raise CommandError("--documents reads a JSONL of conversations; sentences come from a CSV")
        dataset = path.parent.name if path.stem == "dev" else path.stem
        entries: list[tuple[Any, str]] = []
        entries += self._read_documents(path) if opts["documents"] else self._read_csv(path)
        labels_all = np.array([e[1] for e in entries])
        for positive in opts["positive"]:
            if positive not in set(labels_all):
                raise CommandError(f"label '{positive}' is not in {path.name}")
        spec = SimulationSpec(
            seeds=opts["seeds"],
            rounds=opts["rounds"],
            round_size=opts["round_size"],
            repeats=opts["repeats"],
            target_precision=opts["target_precision"],
            typed_examples=opts["typed_examples"],
        )
        keep = subsample(len(entries), opts["max_rows"])
        names = opts["positive"]
        if opts["topic"]:
            if len(names) < 2:
                raise CommandError("a topic simulation needs at least two --positive labels")
            other = len(names)  # 'none'
            if not opts["none"]:
                keep = keep[np.isin(labels_all[keep], names)]
            ys = [np.array([names.index(lab) if lab in names else other for lab in labels_all[keep]])]
            tasks = ["topic: " + ", ".join(names)]
        else:
            ys = [(labels_all[keep] == positive).astype(np.int64) for positive in names]
            tasks = list(names)
        vectors, member_of = self._arrays(dataset, entries, keep, opts["documents"])
        token_ids = None
        if not opts["documents"] and not opts["topic"]:  # concept sentence pools may read n-grams
            ids = encoders.get_encoder().token_ids([e[0] for e in entries])
            token_ids = [ids[i] for i in keep]
        meta = {
            "dataset": dataset,
            "file": str(path),
            "entries": len(keep),
            "entries_in_file": len(entries),
            "subsample": (
                {"rows": len(keep), "of": len(entries), "seed": 0}
                if opts["max_rows"] and len(keep) < len(entries)
                else None
            ),
            "loop": loop.__name__,
            **git_commit(),
        }
        runs = []
        for positive, y in zip(tasks, ys, strict=True):
            run = self._task(meta, positive, y, vectors, member_of, spec, opts, token_ids)
            runs.append(run)
            self._print(run)
        if opts["output"]:
            self._save(Path(opts["output"]), runs)

    def _read_csv(self, path: Path) -> list[tuple[str, str]]:
        """One entry per distinct text (as the app's pool), with the label of its first row."""
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not {"text", "label"} <= set(reader.fieldnames or []):
                raise CommandError(f"{path} needs 'text' and 'label' columns; found {reader.fieldnames}")
            first: dict[str, str] = {}
            for r in reader:
                if r["text"].strip():
                    first.setdefault(r["text"], r["label"])
        return list(first.items())

    def _read_documents(self, path: Path) -> list[tuple[list[str], str]]:
        out = []
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    doc = json.loads(line)
                    turns = [t["text"] for t in doc["turns"] if t["text"].strip()]
                    if turns:
                        out.append((turns, doc["label"]))
        return out

    def _arrays(self, dataset: str, entries: list[tuple[Any, str]], keep: np.ndarray, documents: bool):
        """Vectors of the kept entries (documents: of their lines, with each line's document).

        The whole file is encoded (and cached) once, so every task on a file sees the same vectors.
        """
        if not documents:
            texts = [e[0] for e in entries]
            return cached_vectors(dataset, texts)[keep], None
        lines = [t for turns, _ in entries for t in turns]
        owner = np.repeat(np.arange(len(entries)), [len(turns) for turns, _ in entries])
        where = np.full(len(entries), -1, dtype=np.int64)
        where[keep] = np.arange(len(keep))
        mine = np.flatnonzero(where[owner] >= 0)
        vectors = cached_vectors(dataset, lines)[mine]
        return vectors, where[owner[mine]]

    def _task(
        self, meta, positive, y, vectors, member_of, spec: SimulationSpec, opts, token_ids=None
    ) -> dict:
        topic = opts["topic"]
        names = opts["positive"] if topic else None
        kind = "topic" if topic else "concept"
        task = f"{meta['dataset']} · {positive}"
        if opts["none"]:
            task += " · with none"
        if opts["typed_examples"]:
            task += " · typed examples"
        t0 = time.perf_counter()
        kw = {
            "topic_labels": names,
            "member_of": member_of,
            "workers": opts["workers"],
            "token_ids": token_ids,
        }
        run = {
            "task": task,
            **meta,
            "kind": kind,
            "granularity": "document" if opts["documents"] else "sentence",
            "positive": positive,
            "none": opts["none"],
            "prevalence": round(float(np.mean(y == 1)), 4) if not topic else None,
            "class_shares": (
                {n: round(float(np.mean(y == i)), 4) for i, n in enumerate([*names, loop.NONE])}
                if names
                else None
            ),
            "metric": "macro-F1 of the most likely label" if topic else "F1 at the app's threshold",
            "settings": settings_of(spec),
            "ours": simulate(vectors, y, spec, "ours", **kw),
            "random": simulate(vectors, y, spec, "random", **kw),
        }
        run["settings"]["featurizers"] = list(FEATURIZERS)
        if opts["typed_examples"]:
            # The evidence for TYPED_EXAMPLES_TRAIN: the same runs with typed examples training or not.
            compared = {}
            for value in (True, False):
                if value == loop.TYPED_EXAMPLES_TRAIN:
                    compared[str(value).lower()] = run["ours"]
                    continue
                with typed_examples_train(value):
                    compared[str(value).lower()] = simulate(vectors, y, spec, "ours", **kw)
            run["typed_examples_train"] = {
                k: {"f1_mean": v["f1_mean"], "curve": [p["f1_mean"] for p in v["curve"]]}
                for k, v in compared.items()
            }
        run["behind_random"] = behind_random(run["ours"], run["random"])
        # The file keeps every round of ours (the product) and only the F1 of random's rounds.
        run["random"]["runs"] = [
            [{"labels": p["labels"], "f1": p["f1"]} for p in r] for r in run["random"]["runs"]
        ]
        for r in run["ours"]["runs"]:
            for p in r:
                if not p["reason"]:
                    del p["reason"]
        run["seconds"] = round(time.perf_counter() - t0, 1)
        return run

    def _print(self, run: dict) -> None:
        ours, rand = run["ours"], run["random"]
        share = f"prevalence {run['prevalence']:.1%}" if run["prevalence"] is not None else "topic"
        self.stdout.write(
            f"\n{run['task']} ({share}, {run['entries']} entries) · {run['metric']} on a held-out third, "
            f"{run['settings']['repeats']} repeats, {run['seconds']} s"
        )
        self.stdout.write(f"{'round':>5} {'labels':>6} {'ours':>15} {'random':>15} {'ours best-thr':>13}")
        for i, (a, b) in enumerate(zip(ours["curve"], rand["curve"], strict=True)):
            best = f"{a['f1_best_mean']:.3f}" if a["f1_best_mean"] is not None else "-"
            flag = "  < random" if a["f1_mean"] < b["f1_mean"] - BEHIND_RANDOM else ""
            se = next((f.get("paired_se") for f in run["behind_random"] if f["round"] == i + 1), None)
            flag += f" (paired s.e. {se})" if se is not None else ""
            self.stdout.write(
                f"{i + 1:>5} {a['labels']:>6} {a['f1_mean']:>7.3f} ± {a['f1_std']:.3f} "
                f"{b['f1_mean']:>7.3f} ± {b['f1_std']:.3f} {best:>13}{flag}"
            )
        for metric, row in ours["coverage"].items():
            pool = ours["coverage_pool"][metric]["share"]
            ok = "ok" if row["share"] is not None and row["share"] >= COVERAGE_GOAL else "BELOW GOAL"
            self.stdout.write(
                f"  95% interval of {metric}: covers held-out truth {row['covered']}/{row['points']} "
                f"({row['share']}) {ok}; covers the pool's truth {pool}"
            )
        self.stdout.write(
            f"  mean |{ours['shown_metric']} shown - true|: {ours['shown_gap_mean']} (last round "
            f"{ours['shown_gap_final']}, median interval width {ours['width_final_median']}); "
            f"best-threshold F1 - app-threshold F1: {ours['threshold_gap_mean']} "
            f"(final round {ours['threshold_gap_final']})"
        )
        check = ours.get("check_round")
        if check:
            self.stdout.write(
                f"  check round ({check['cards_mean']} cards, {check['found_mean']} matches found): recall "
                f"interval width {check['recall_width_before']} -> {check['recall_width_after']}, coverage "
                f"after {check['coverage']}; F1 {check['f1_before']} -> {check['f1_after']}"
            )
        promo = ours.get("promotion")
        if promo:
            self.stdout.write(
                f"  automatic promotion: {promo['promotions']} promoted, {promo['held_back']} held back; "
                f"regret share {promo['regret_share']} (goal <= 0.05), "
                f"worse promoted {promo['worse_promoted_share']} (goal <= 0.05)"
            )
            if "pool_oracle" in promo:
                floor = promo["pool_oracle"]
                self.stdout.write(
                    f"    knowing every answer of the pool: regret share {floor['regret_share']}, "
                    f"worse promoted {floor['worse_promoted_share']} (held-out F1 varies by chance)"
                )
        if "typed_examples_train" in run:
            t = run["typed_examples_train"]
            self.stdout.write(
                f"  typed examples train as 'yes': {t['true']['curve']} ; do not: {t['false']['curve']}"
            )

    def _report(self, path: Path) -> None:
        """One line per task: final scores of both strategies, the estimates at the last round
        (|shown - held-out|, median interval width) and their coverage over every round, automatic
        promotion (and what a rule that knew the pool would do), and the check round."""
        if not path.exists():
            raise CommandError(f"{path} does not exist")
        runs = json.loads(path.read_text())
        self.stdout.write(
            f"{'task':<44} {'ours':>6} {'random':>6} {'worst vs random':>16} {'gap':>6} {'width':>6} "
            f"{'coverage P/R/F1 or acc':>22} {'regret/worse':>12} {'pool knew':>11} {'check R width':>14} "
            f"{'cov':>5}  commit"
        )
        for run in runs:
            ours, rand = run["ours"], run["random"]
            worst = min(
                (round(a["f1_mean"] - b["f1_mean"], 3), i + 1)
                for i, (a, b) in enumerate(zip(ours["curve"], rand["curve"], strict=True))
            )
            cov = "/".join(
                f"{row['share']:.2f}" if row["share"] is not None else "-"
                for row in ours["coverage"].values()
            )
            promo = ours.get("promotion") or {}
            floor = promo.get("pool_oracle") or {}
            check = ours.get("check_round") or {}

            def pair(a, b):
                return f"{a:.2f}/{b:.2f}" if a is not None and b is not None else "-"

            self.stdout.write(
                f"{run['task'][:44]:<44} {ours['f1_mean']:>6.3f} {rand['f1_mean']:>6.3f} "
                f"{f'{worst[0]:+.3f} (r{worst[1]})':>16} {ours.get('shown_gap_final') or '-':>6} "
                f"{ours.get('width_final_median') or '-':>6} {cov:>22} "
                f"{pair(promo.get('regret_share'), promo.get('worse_promoted_share')):>12} "
                f"{pair(floor.get('regret_share'), floor.get('worse_promoted_share')):>11} "
                f"{pair(check.get('recall_width_before'), check.get('recall_width_after')):>14} "
                f"{(check.get('coverage') or {}).get('recall', '-'):>5}  "
                f"{run.get('commit', '?')[:8]}{' dirty' if run.get('dirty') else ''}"
            )
        concept = [r["ours"] for r in runs if r.get("kind") == "concept"]
        finals_gap = [o["shown_gap_final"] for o in concept if o.get("shown_gap_final") is not None]
        widths = [o["width_final_median"] for o in concept if o.get("width_final_median") is not None]
        if finals_gap:
            self.stdout.write(
                f"concept tasks, last round: mean |shown F1 - held-out F1| {np.mean(finals_gap):.4f}, "
                f"median F1 interval width {np.median(widths):.4f}"
            )
        gaps = [r["ours"]["threshold_gap_mean"] for r in runs if r["ours"]["threshold_gap_mean"] is not None]
        finals = [
            r["ours"]["threshold_gap_final"] for r in runs if r["ours"]["threshold_gap_final"] is not None
        ]
        if gaps:
            self.stdout.write(
                f"mean over the {len(gaps)} concept tasks: best-threshold F1 - app-threshold F1 "
                f"{np.mean(gaps):.4f} over every round, {np.mean(finals):.4f} at the last round"
            )

    def _save(self, output: Path, runs: list[dict]) -> None:
        existing = json.loads(output.read_text()) if output.exists() else []
        tasks = {r["task"] for r in runs}
        # Entries from before the one loop (no "task") measured another code path: they are dropped.
        merged = [r for r in existing if r.get("task") and r["task"] not in tasks] + runs
        write_atomic(output, lambda tmp: Path(tmp).write_text(dump(merged) + "\n"))
        self.stdout.write(f"\nwrote {len(runs)} task(s) to {output}")
