"""Serving benchmark: the prediction API under its production server, on both setups a user runs,
against a baseline, in one run.

Each setup (``bench/setups.py``: the embedded default, SQLite and the embedded Redis; and PostgreSQL
with Redis) is a fresh install in a temporary folder: the demo corpus imported and embedded with
the real encoder; 100 concept trackers trained through the app's own services, each with a live
model version; a 100,000-segment dataset of 5,000 distinct texts, each embedded once (scoring reads
a vector per segment all the same). It is served by granian as `make run` serves it, on loopback,
a process per core with four threads each. Measured per setup (``http``: embedded, ``production``):

- one short text through ``POST /api/v1/trackers/{code}/predict``: p50/p99 latency at concurrency 1
  and throughput at 1, 4 and 16 concurrent clients;
- beside it, the raw encoder: its batch-1 p50 in a process of its own just before and after the
  latency run (``encoder_b1_p50_ms``), and its capacity (``encoder_capacity_rps``): batch-1 encodes per
  second with a process per core, one thread each, all at once, which is what the server's processes
  could do if the app cost nothing;
- the same text through ``POST /api/v1/workspaces/{code}/predict`` with 1, 10 and 100 live trackers;
- in-process cost per text of a prediction through the whole request path (the WSGI application a
  server calls: routing, middleware, parsing, key, rate limit, tracker, live version, encoder, head,
  answers, rendering) at batch 1 and 32, against the raw encoder alone, timed in alternation;
- bulk scoring of the 100,000-segment dataset by 10 trackers (the app's job, run in-process), next
  to the encoder's own rate;
- what counting costs a request (its Prometheus counters and its JSON log line): the batch-1 path
  with counting on and off, timed in alternation;
- cold start of a web worker to its first prediction, and a web worker's resident memory.

The baseline (``bench/baseline_app.py``: sentence-transformers and a scikit-learn head with the same
weights) runs behind the same server with the same processes and threads, torch limited to one
thread per process as the app's encoder is.

    python bench/serving.py [--seconds 6] [--setups embedded,production]

Writes bench/results/serving.json and prints a table. The per-key rate is raised for the run
(TRACKERS_API_V1_RATE): it would otherwise answer 429 long before the server is the limit.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from setups import SETUPS, free_port, install  # bench/setups.py, beside this script

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "serving.json"
TEXT = "honestly the price is too high for us this year"
BULK_SEGMENTS = 100_000
BULK_DISTINCT = 5_000
TRACKERS = 100

SETUP = r"""
import json, sys, time
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from config.celery import app
app.conf.task_always_eager = True  # import, embed, index, training and publishing in this process
from collections import Counter
from django.contrib.auth.models import User
from labeling import game
from labeling import services as labeling
from serving.versions import services as serving
from serving.ml.export import head_parts
from serving.models import ApiKey
from trackers import imports, services
from trackers.demo import demo_zip
from trackers.models import Membership, Role, Segment, Tracker, Workspace
import onnx

owner = User.objects.create_user("owner", password="x")
ws = Workspace.objects.create(name="Serving bench")
Membership.objects.create(workspace=ws, user=owner, role=Role.OWNER)
ds = services.create_dataset(workspace=ws, name="Demo calls")
imports.start_import(dataset=ds, user=owner, filename="demo.zip", data=demo_zip(150))
ds.refresh_from_db()
print(f"  demo corpus: {ds.vector_count} vectors", file=sys.stderr, flush=True)
segments = list(Segment.objects.filter(dataset=ds).order_by("pk"))
words = Counter(w for s in segments for w in set(s.text.lower().split()) if len(w) > 4 and w.isalpha())
keywords = [w for w, n in words.most_common() if 30 <= n <= len(segments) // 3][: int(sys.argv[1])]
trackers = []
started = time.perf_counter()
for i in range(int(sys.argv[1])):
    word = keywords[i % len(keywords)]
    tracker = labeling.create_tracker(workspace=ws, user=owner, name=f"mentions {word} {i}", datasets=[ds],
                                      seeds=[s.text for s in segments if word in s.text.lower()][:3], round_size=10)
    yes = [s for s in segments if word in s.text.lower().split()][:20]
    no = [s for s in segments if word not in s.text.lower()][i : i + 40]
    for s in yes:
        game.record_label(tracker, owner, segment=s, answer="yes")
    for s in no:
        game.record_label(tracker, owner, segment=s, answer="no")
    labeling.request_training(tracker)
    version = serving.live_version(tracker)
    assert version is not None, f"tracker {i} has no live version"
    trackers.append(str(tracker.code))
    if i % 10 == 9:
        print(f"  {i + 1} trackers trained", file=sys.stderr, flush=True)
train_s = time.perf_counter() - started
first = serving.live_version(Tracker.objects.get(code=trackers[0]))
w, b, _ = head_parts(onnx.load(f"{first.artifact_dir}/head.onnx"))
threshold, _ = serving.threshold_of(first)
distinct = [f"customer {j} asked about the {keywords[j % len(keywords)]} on call {j % 997}"
            for j in range(int(sys.argv[3]))]
rows = [distinct[i % len(distinct)] for i in range(int(sys.argv[2]))]  # embedded once per distinct text
bulk = services.create_dataset(workspace=ws, name="Bulk")
started = time.perf_counter()
imports.start_import(dataset=bulk, user=owner, filename="bulk.csv", data=("text\n" + "\n".join(rows) + "\n").encode())
bulk.refresh_from_db()
key = ApiKey.issue(workspace=ws, name="bench", created_by=owner, role=Role.OWNER)[1]
print(json.dumps({"key": key, "trackers": trackers, "workspace": str(ws.code), "bulk": str(bulk.code),
                  "bulk_segments": bulk.segments.count(), "bulk_vectors": bulk.vector_count,
                  "bulk_import_s": time.perf_counter() - started, "train_s": train_s,
                  "demo_segments": len(segments),
                  "head": {"coef": w[:, 0].tolist(), "intercept": float(b[0]), "threshold": threshold}}))
"""

IN_PROCESS = r"""
import io, json, logging, os, sys, time
import django
django.setup()
import numpy as np
from config.celery import app
app.conf.task_always_eager = True
from django.conf import settings
from serving.scoring import services as scoring
from serving.versions import services
from trackers import encoders
from trackers.models import Dataset, Tracker

args = json.loads(sys.argv[1])
encoders.limit_threads(settings.WEB_ENCODER_THREADS)  # as config/wsgi.py does in a web process
tracker = Tracker.objects.get(code=args["trackers"][0])
encoder = encoders.get_encoder(services.encoder_id_of(tracker))
texts32 = [f"{args['text']} ({i})" for i in range(32)]

from config.wsgi import application  # (sets up Django, and its logging, again)

# Each request's JSON log line is formatted and written as in production, to nowhere (not the terminal).
for handler in logging.getLogger().handlers:
    if isinstance(handler, logging.StreamHandler):
        handler.setStream(open(os.devnull, "w"))

PATH = f"/api/v1/trackers/{tracker.code}/predict"

def app_path(texts):
    # The whole request path a server hands the app: the WSGI application (routing, middleware,
    # parsing, the key, the rate limit, the endpoint, rendering), as granian calls it.
    body = json.dumps({"texts": texts}).encode()
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": PATH, "SCRIPT_NAME": "", "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000", "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
        "HTTP_AUTHORIZATION": f"Bearer {args['key']}", "REMOTE_ADDR": "127.0.0.1",
        "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0), "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False,
    }
    status = []
    out = b"".join(application(environ, lambda s, h, exc_info=None: status.append(s)))
    assert status[0].startswith("200"), (status, out[:200])
    return out

def paired_ms(texts, pairs):
    # Per-text milliseconds of the raw encoder and of the app, timed in alternating calls, so that
    # both see the same machine state (the encoder's own speed drifts by 10-20% between runs).
    for _ in range(10):
        encoder.encode(texts)
        app_path(texts)
    raw, app = [], []
    for _ in range(pairs):
        t = time.perf_counter()
        encoder.encode(texts)
        raw.append((time.perf_counter() - t) * 1000 / len(texts))
        t = time.perf_counter()
        app_path(texts)
        app.append((time.perf_counter() - t) * 1000 / len(texts))
    return float(np.median(raw)), float(np.median(app))

from serving import matches as _matches
from trackers import metrics as _metrics

_counting = (_matches.count, _metrics.request_answered)
_request_log = logging.getLogger("trackers.requests")

def counting(on):
    # What a request adds to count itself: the Prometheus counters (per tracker, per route) and
    # its JSON log line. Off: no-ops in their place.
    _matches.count = _counting[0] if on else (lambda *a, **k: None)
    _metrics.request_answered = _counting[1] if on else (lambda *a, **k: None)
    _request_log.disabled = not on

def paired_counting(pairs):
    # The same batch-1 request with counting on and off, timed in alternation.
    on, off = [], []
    for i in range(pairs + 50):
        for state, into in ((True, on), (False, off)):
            counting(state)
            t = time.perf_counter()
            app_path([args["text"]])
            if i >= 50:
                into.append((time.perf_counter() - t) * 1000)
    counting(True)
    return float(np.median(on)), float(np.median(off))

out = {}
out["encoder_b1_p50_ms"], out["app_b1_ms"] = paired_ms([args["text"]], 1500)
out["counting_on_b1_ms"], out["counting_off_b1_ms"] = paired_counting(1500)
out["encoder_b32_ms_per_text"], out["app_b32_ms_per_text"] = paired_ms(texts32, 40)
distinct = [f"customer {i} asked about the price on call {i % 997}" for i in range(640)]
started = time.perf_counter()
for i in range(0, len(distinct), 32):
    encoder.encode(distinct[i : i + 32])
out["encoder_per_s"] = len(distinct) / (time.perf_counter() - started)
bulk = Dataset.objects.get(code=args["bulk"])
chosen = list(Tracker.objects.filter(code__in=args["trackers"][:10]))
started = time.perf_counter()
job = scoring.start_scoring(dataset=bulk, user=None, trackers=chosen)
job.refresh_from_db()
elapsed = time.perf_counter() - started
assert job.state == "succeeded", job.error
out["bulk"] = {"segments": job.processed, "trackers": len(chosen), "seconds": elapsed,
               "segments_per_s": job.processed / elapsed,
               "matches": sum(c["matches"] for c in job.result["trackers"].values())}
print(json.dumps(out))
"""


ENCODER_B1 = r"""
import json, sys, time
import django
django.setup()
import numpy as np
from django.conf import settings
from trackers import encoders
encoders.limit_threads(settings.WEB_ENCODER_THREADS)  # as a web process does
encoder = encoders.get_encoder()
for _ in range(30):
    encoder.encode([sys.argv[1]])
times = []
for _ in range(400):
    started = time.perf_counter()
    encoder.encode([sys.argv[1]])
    times.append(time.perf_counter() - started)
print(json.dumps({"p50_ms": float(np.median(times)) * 1000}))
"""


ENCODER_CAPACITY = r"""
import json, sys, time
import django
django.setup()
from trackers import encoders
encoders.limit_threads(1)  # one thread per process, a process per core
encoder = encoders.get_encoder()
start, seconds = float(sys.argv[2]), float(sys.argv[3])
while time.time() < start:  # every process warms up until the common start
    encoder.encode([sys.argv[1]])
done, stop = 0, start + seconds
while time.time() < stop:
    encoder.encode([sys.argv[1]])
    done += 1
print(json.dumps({"encodes": done, "seconds": time.time() - start}))
"""


def encoder_capacity(env: dict[str, str], seconds: float) -> float:
    """Batch-1 encodes per second of the raw encoder with a process per core, one thread each,
    running at once: what the server's processes could answer if the app cost nothing."""
    start = time.time() + 15  # each process loads the encoder before the common start
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", ENCODER_CAPACITY, TEXT, str(start), str(seconds)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(os.cpu_count() or 2)
    ]
    total = 0.0
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        if proc.returncode:
            raise SystemExit("an encoder capacity process failed (its error is above)")
        done = json.loads(out.strip().splitlines()[-1])
        total += done["encodes"] / done["seconds"]
    return total


def _run(code: str, env: dict[str, str], *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        timeout=3600,
    )
    if done.returncode:
        raise SystemExit("a benchmark step failed (its error is above)")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _server(app: str, port: int, env: dict[str, str], workers: int, log: Path) -> subprocess.Popen:
    """`app` (module:callable) served as `make run` serves the app."""
    return subprocess.Popen(
        [sys.executable, "-m", "config.serve", app, "--port", str(port), "--workers", str(workers)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "ab"),  # noqa: SIM115 (held while the server runs)
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


class Client:
    """One keep-alive connection posting the same JSON body again and again, with as little work on
    this side as HTTP/1.1 allows (the request's bytes made once, the answer's length read from its
    header): on two cores the load generator shares the CPU with the server it measures."""

    def __init__(self, port: int, path: str, body: dict, headers: dict[str, str]):
        payload = json.dumps(body).encode()
        lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"Content-Length: {len(payload)}")
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
        self.path = path
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def call(self) -> float:
        started = time.perf_counter()
        self.sock.sendall(self.request)
        data = b""
        while (end := data.find(b"\r\n\r\n")) < 0:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"{self.path}: the server closed the connection")
            data += chunk
        head = data[:end].lower()
        at = head.find(b"content-length:")
        if at < 0:
            raise RuntimeError(f"{self.path} answered without a Content-Length: {head[:300]!r}")
        stop = head.find(b"\r\n", at)
        length = int(head[at + 15 : stop if stop > 0 else len(head)])
        body = data[end + 4 :]
        while len(body) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"{self.path}: the server closed the connection")
            body += chunk
        if not head.startswith(b"http/1.1 200"):
            raise RuntimeError(f"{self.path} answered {head[:40]!r}: {body[:300]!r}")
        return time.perf_counter() - started


def _wait_ready(port: int, path: str, body: dict, headers: dict[str, str], timeout: float = 300) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        try:
            Client(port, path, body, headers).call()
            return time.perf_counter() - started
        except (OSError, RuntimeError, http.client.HTTPException):
            time.sleep(0.05)
    raise SystemExit(f"no answer on {path} after {timeout}s")


def latency(port: int, path: str, body: dict, headers: dict[str, str], n: int = 400) -> dict[str, float]:
    client = Client(port, path, body, headers)
    for _ in range(30):
        client.call()
    times = np.array([client.call() for _ in range(n)]) * 1000
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99))}


def throughput(
    port: int, path: str, body: dict, headers: dict[str, str], clients: int, seconds: float
) -> float:
    done = [0] * clients
    stop = time.perf_counter() + seconds

    def run(i: int) -> None:
        client = Client(port, path, body, headers)
        client.call()  # connect before the clock counts
        while time.perf_counter() < stop:
            client.call()
            done[i] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - started)


def http_numbers(
    port: int, path: str, body: dict, headers: dict[str, str], seconds: float
) -> dict[str, float]:
    numbers = latency(port, path, body, headers)
    for c in (1, 4, 16):
        numbers[f"rps_c{c}"] = throughput(port, path, body, headers, c, seconds)
    return numbers


def worker_rss_mb(master: int) -> float:
    """The largest resident memory of the server's worker processes."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    sizes = []
    for pid in children:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                sizes.append(int(line.split()[1]) / 1024)
    return max(sizes)


def measure(setup: str, tmp: Path, args: argparse.Namespace) -> tuple[dict, dict]:
    """One setup's numbers, and its setup's output (the key, the trackers, the first head)."""
    with install(setup, tmp / setup, "serving") as env:
        env["TRACKERS_API_V1_RATE"] = "100000000/m"
        # Prometheus counts per process, added up at a scrape, as `make run` serves.
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp / setup / "prometheus")
        Path(env["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
        workers = os.cpu_count() or 2
        print(
            f"{setup}: setting up the demo corpus, {args.trackers} trained trackers, a {args.bulk_segments:,}-segment dataset…",
            flush=True,
        )
        made = _run(SETUP, env, str(args.trackers), str(args.bulk_segments), str(BULK_DISTINCT))
        headers = {"Authorization": f"Bearer {made['key']}"}
        one = {"texts": [TEXT]}
        predict = f"/api/v1/trackers/{made['trackers'][0]}/predict"
        many = f"/api/v1/workspaces/{made['workspace']}/predict"
        block: dict = {
            "setup": SETUPS[setup],
            **{k: v for k, v in made.items() if k not in ("key", "head", "trackers")},
        }
        port = free_port()
        server = _server("config.wsgi:application", port, env, workers, tmp / f"{setup}-server.log")
        try:
            _wait_ready(port, predict, one, headers)
            print(f"{setup}: latency and throughput…", flush=True)
            # The raw encoder's batch-1 p50 just before and after the latency run (the server idle), so
            # that the two compare like with like: this machine's speed drifts by tens of percent
            # over a few minutes.
            before = _run(ENCODER_B1, env, TEXT)["p50_ms"]
            block.update(latency(port, predict, one, headers))
            after = _run(ENCODER_B1, env, TEXT)["p50_ms"]
            block["encoder_b1_p50_ms"] = (before + after) / 2
            for c in (1, 4, 16):
                block[f"rps_c{c}"] = throughput(port, predict, one, headers, c, args.seconds)
            block["encoder_capacity_rps"] = encoder_capacity(env, args.seconds)
            for _ in range(workers * 4):  # every worker has loaded the heads for every tracker count
                for n in (1, 10, 100):
                    Client(port, many, {"texts": [TEXT], "trackers": made["trackers"][:n]}, headers).call()
            block["trackers_scaling_ms"] = {
                str(n): latency(
                    port, many, {"texts": [TEXT], "trackers": made["trackers"][:n]}, headers, 300
                )["p50_ms"]
                for n in (1, 10, 100)
            }
            block["rss_mb"] = worker_rss_mb(server.pid)
        finally:
            _stop(server)

        print(f"{setup}: cold start of a web worker…", flush=True)
        port = free_port()
        started = time.perf_counter()
        cold = _server("config.wsgi:application", port, env, 1, tmp / f"{setup}-cold.log")
        try:
            _wait_ready(port, predict, one, headers)
            block["cold_start_s"] = time.perf_counter() - started
        finally:
            _stop(cold)

        print(f"{setup}: in-process costs and bulk scoring…", flush=True)
        inproc = _run(IN_PROCESS, env, json.dumps({**made, "text": TEXT}))
        block["in_process"] = {
            "b1_overhead_pct": 100 * (inproc["app_b1_ms"] / inproc["encoder_b1_p50_ms"] - 1),
            "b32_overhead_pct": 100 * (inproc["app_b32_ms_per_text"] / inproc["encoder_b32_ms_per_text"] - 1),
            **{k: v for k, v in inproc.items() if k != "bulk"},
        }
        block["bulk"] = {**inproc["bulk"], "encoder_per_s": inproc["encoder_per_s"]}
        return block, made


def baseline(made: dict, tmp: Path, seconds: float) -> dict:
    """sentence-transformers and scikit-learn with the first tracker's head, behind the same server:
    the same processes and threads, torch on one thread per process."""
    with install("embedded", tmp / "baseline", "serving") as env:
        head_file = tmp / "head.json"
        head_file.write_text(json.dumps(made["head"]))
        port = free_port()
        server = _server(
            "bench.baseline_app:app",
            port,
            {**env, "BASELINE_HEAD": str(head_file), "BASELINE_TORCH_THREADS": "1"},
            os.cpu_count() or 2,
            tmp / "baseline.log",
        )
        try:
            one = {"texts": [TEXT]}
            _wait_ready(port, "/predict", one, {})
            return {"torch_threads_per_process": 1, **http_numbers(port, "/predict", one, {}, seconds)}
        finally:
            _stop(server)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="each throughput run")
    parser.add_argument(
        "--trackers", type=int, default=TRACKERS, help="trained trackers (the scaling needs 100)"
    )
    parser.add_argument("--bulk-segments", type=int, default=BULK_SEGMENTS)
    parser.add_argument("--setups", default="embedded,production")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="trackers-serving-"))
    results: dict = {"machine": {"cpus": os.cpu_count(), "web_workers": os.cpu_count() or 2, "threads": 4}}
    try:
        made: dict = {}
        for setup in args.setups.split(","):
            block, made = measure(setup, tmp, args)
            results["http" if setup == "embedded" else "production"] = block
        print("baseline: sentence-transformers + scikit-learn behind the same server…", flush=True)
        results["baseline_http"] = baseline(made, tmp, args.seconds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    table(results)


def goals(block: dict) -> list[tuple[str, str, str, bool]]:
    """(measure, value, goal, met) for one setup's block."""
    added = block["p50_ms"] - block["encoder_b1_p50_ms"]
    capacity = block["rps_c16"] / block["encoder_capacity_rps"]
    inproc = block["in_process"]["b1_overhead_pct"]
    scaling = block["trackers_scaling_ms"]["100"] / block["trackers_scaling_ms"]["1"]
    counting = block["in_process"]["counting_on_b1_ms"] - block["in_process"]["counting_off_b1_ms"]
    return [
        (
            "HTTP p50 over the raw encoder's b1 p50",
            f"{block['p50_ms']:.2f} vs {block['encoder_b1_p50_ms']:.2f} ms: {added:+.2f} ms",
            "≤ +1.0 ms",
            added <= 1.0,
        ),
        (
            "16-client throughput / encoder capacity",
            f"{block['rps_c16']:.0f} / {block['encoder_capacity_rps']:.0f} req/s: {capacity:.2f}×",
            "≥ 0.70×",
            capacity >= 0.70,
        ),
        (
            "in-process overhead at batch 1 (WSGI)",
            f"{inproc:+.1f}% ({block['in_process']['app_b1_ms'] - block['in_process']['encoder_b1_p50_ms']:+.2f} ms)",
            "≤ 10%",
            inproc <= 10,
        ),
        ("100 live trackers against one", f"{scaling:.2f}×", "≤ 1.1×", scaling <= 1.1),
        (
            "counters and log line, batch 1 p50 (WSGI)",
            f"{counting:+.3f} ms ({block['in_process']['counting_on_b1_ms']:.2f} vs "
            f"{block['in_process']['counting_off_b1_ms']:.2f})",
            "≤ +0.2 ms",
            counting <= 0.2,
        ),
    ]


def table(r: dict) -> None:
    blocks = [(name, r[name]) for name in ("http", "production") if name in r]
    b = r["baseline_http"]
    print(f"\n{'':34} " + " ".join(f"{n:>12}" for n, _ in blocks) + f" {'baseline':>12}")
    for key, label in (
        ("p50_ms", "one text over HTTP: p50 (ms)"),
        ("p99_ms", "one text over HTTP: p99 (ms)"),
        ("rps_c1", "requests/s, 1 client"),
        ("rps_c4", "requests/s, 4 clients"),
        ("rps_c16", "requests/s, 16 clients"),
    ):
        print(f"{label:34} " + " ".join(f"{blk[key]:12.2f}" for _, blk in blocks) + f" {b[key]:12.2f}")
    for key, label in (
        ("encoder_b1_p50_ms", "raw encoder, batch 1 p50 (ms)"),
        ("encoder_capacity_rps", "raw encoder capacity (req/s)"),
        ("cold_start_s", "cold start to first prediction (s)"),
        ("rss_mb", "web worker resident memory (MB)"),
    ):
        print(f"{label:34} " + " ".join(f"{blk[key]:12.2f}" for _, blk in blocks))
    print(
        f"{'batch 32 over raw encoder (%)':34} "
        + " ".join(f"{blk['in_process']['b32_overhead_pct']:+12.1f}" for _, blk in blocks)
    )
    print(
        f"{'bulk scoring, 10 trackers (seg/s)':34} "
        + " ".join(f"{blk['bulk']['segments_per_s']:12,.0f}" for _, blk in blocks)
    )
    for name, blk in blocks:
        print(f"\ngoals, {name} ({blk['setup']}):")
        for measure_, value, goal, met in goals(blk):
            print(f"  {measure_:42} {value:34} {goal:10} {'met' if met else 'MISSED'}")
    print(f"\nwritten to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
