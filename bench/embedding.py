"""Encoder benchmark: our ONNX encoder (fp32, int8) against sentence-transformers on the same texts.

Each backend runs in its own fresh process, so cold start and peak RSS are its own. Then the
end-to-end import + embed + index rate of the SMS file through a real Celery worker on the
embedded defaults. Writes bench/results/embedding.json and prints a table.

    python bench/embedding.py [--texts 2000] [--b1 300] [--skip-pipeline]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from load import embedded_redis  # bench/load.py, beside this script

REPO = Path(__file__).resolve().parent.parent
SMS = REPO.parent / "shared" / "data" / "sms_spam" / "dev.csv"
RESULTS = REPO / "bench" / "results" / "embedding.json"
BACKENDS = ("sentence_transformers", "onnx_fp32", "onnx_int8")


def load_texts(n: int) -> list[str]:
    with open(SMS, newline="", encoding="utf-8") as fh:
        return [row["text"] for row in csv.DictReader(fh)][:n]


def encoder_dir() -> Path:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings

    return Path(settings.ENCODER_DIR)


def measure(backend: str, n_texts: int, n_b1: int) -> dict:
    """Runs inside a fresh process: load, warm up, then batch-1 latency and batch-32 throughput."""
    import numpy as np

    texts = load_texts(n_texts)
    t0 = time.perf_counter()
    if backend == "sentence_transformers":
        from sentence_transformers import SentenceTransformer

        from trackers.ml.export_encoder import packaged_model_dir

        model = SentenceTransformer(str(packaged_model_dir()), device="cpu")

        def encode(batch, bs):
            return model.encode(batch, batch_size=bs, normalize_embeddings=True, convert_to_numpy=True)
    else:
        from trackers.ml.embedding import OnnxEncoder

        enc = OnnxEncoder(encoder_dir(), backend.removeprefix("onnx_"))

        def encode(batch, bs):
            return enc.encode(batch, batch_size=bs)

    encode(texts[:1], 1)
    cold = time.perf_counter() - t0
    encode(texts[:64], 32)  # warm-up
    lat = []
    for t in texts[:n_b1]:
        s = time.perf_counter()
        encode([t], 1)
        lat.append(time.perf_counter() - s)
    s = time.perf_counter()
    encode(texts, 32)
    b32 = time.perf_counter() - s
    lat_ms = np.array(lat) * 1000
    return {
        "b1_per_s": round(len(lat) / sum(lat), 1),
        "b32_per_s": round(len(texts) / b32, 1),
        "p50_ms": round(float(np.percentile(lat_ms, 50)), 2),
        "p99_ms": round(float(np.percentile(lat_ms, 99)), 2),
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cold_start_s": round(cold, 2),
    }


def pipeline_rate(tmp: Path) -> dict:
    """Import + embed + index of the whole SMS file through a worker on SQLite and the embedded Redis."""
    from django.conf import settings as dj

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "CELERY_"))}
    env.update(
        TRACKERS_DATA_DIR=str(tmp),
        TRACKERS_ENCODER_DIR=str(encoder_dir()),
        HF_HUB_OFFLINE="1",
        DJANGO_SETTINGS_MODULE="config.settings",
    )

    def manage(*args):
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    manage("migrate", "--noinput")
    services = contextlib.ExitStack()
    services.enter_context(embedded_redis(env))
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--concurrency=1",
            "--loglevel=WARNING",
            "-Q",
            "interactive,bulk",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        time.sleep(3)  # worker up, encoder not yet loaded: its load time counts below
        script = (
            "import time, json; from django.contrib.auth import get_user_model; from trackers import imports, services;"
            "from trackers.models import Dataset, Job;"
            "u = get_user_model().objects.create_user('bench');"
            "ws = services.create_workspace(name='bench', owner=u);"
            "ds = services.create_dataset(workspace=ws, name='sms');"
            f"data = open({str(SMS)!r}, 'rb').read(); t0 = time.time();"
            "imports.start_import(dataset=ds, user=u, filename='sms.csv', data=data);\n"
            "while not Job.objects.filter(dataset=ds, kind='index', state='succeeded').exists():\n"
            "    assert not Job.objects.filter(dataset=ds, state='failed').exists(); time.sleep(0.2)\n"
            "ds.refresh_from_db(); print(json.dumps({'seconds': time.time() - t0, 'documents': ds.documents.count(),"
            " 'segments': ds.segments.count(), 'vectors': ds.vector_count}))"
        )
        out = json.loads(manage("shell", "-c", script).strip().splitlines()[-1])
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(timeout=30)
        services.close()
    out["rows_per_s"] = round(out["documents"] / out["seconds"], 1)
    out["seconds"] = round(out["seconds"], 2)
    out["setup"] = (
        "SQLite + the embedded Redis, one worker process, encoder "
        + os.environ.get("TRACKERS_ENCODER_VARIANT", "int8")
        + " (including the worker's encoder load)"
    )
    del dj
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--b1", type=int, default=300, help="texts timed one at a time")
    ap.add_argument("--skip-pipeline", action="store_true")
    ap.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.worker:
        print(json.dumps(measure(args.worker, args.texts, args.b1)))
        return
    if not SMS.exists():
        sys.exit(f"benchmark texts not found: {SMS} (the shared data folder is absent)")
    results: dict = {"backends": {}}
    for backend in BACKENDS:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", backend, "--texts", str(args.texts), "--b1", str(args.b1)],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        results["backends"][backend] = json.loads(proc.stdout.strip().splitlines()[-1])
    st = results["backends"]["sentence_transformers"]
    for name in ("onnx_fp32", "onnx_int8"):
        r = results["backends"][name]
        r["b1_speedup"] = round(r["b1_per_s"] / st["b1_per_s"], 2)
        r["b32_speedup"] = round(r["b32_per_s"] / st["b32_per_s"], 2)
    results["texts"] = {
        "count": args.texts,
        "batch1_count": args.b1,
        "source": "shared/data/sms_spam/dev.csv",
    }
    results["cpu_count"] = os.cpu_count()
    results["machine"] = platform.machine()
    if not args.skip_pipeline:
        sys.path.insert(0, str(REPO))
        with tempfile.TemporaryDirectory() as tmp:
            results["pipeline_sms_import_embed_index"] = pipeline_rate(Path(tmp))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")

    cols = (
        "b1_per_s",
        "b32_per_s",
        "p50_ms",
        "p99_ms",
        "rss_mb",
        "cold_start_s",
        "b1_speedup",
        "b32_speedup",
    )
    print(f"{'backend':<22}" + "".join(f"{c:>14}" for c in cols))
    for name, r in results["backends"].items():
        print(f"{name:<22}" + "".join(f"{r.get(c, '—')!s:>14}" for c in cols))
    if "pipeline_sms_import_embed_index" in results:
        p = results["pipeline_sms_import_embed_index"]
        print(
            f"\nimport+embed+index of {p['documents']:,} SMS rows ({p['segments']:,} segments, {p['vectors']:,} "
            f"distinct vectors) through the worker: {p['seconds']} s = {p['rows_per_s']} rows/s"
        )
    print(f"\nwritten to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
