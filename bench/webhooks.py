"""Webhook benchmark: time from a match to its receipt, per source, and what a dead receiver costs
the prediction API, in one run.

For each setup (``bench/setups.py``: the embedded default, SQLite and the embedded Redis; and
PostgreSQL with Redis), a fresh install in a temporary folder (the demo corpus imported and embedded
with the real encoder; one concept tracker trained through the app's own services with a live
version) is served as `make run` serves it: granian, an interactive worker with the beat, a bulk
worker and a webhooks worker (threads). A receiver on
loopback records when each webhook-id first arrives. Measured:

- the prediction API (``alert: true``): from the request to the receipt, and from the event's own
  timestamp (the match) to the receipt;
- bulk scoring of the demo dataset through the API: from the match to the receipt of each event;
- a call file imported through the API into the dataset: from the upload to the receipt, and from
  the match to the receipt (import, embedding, automatic scoring and delivery, with no other step);
- prediction p50 with no endpoint, with a healthy receiver, and with a dead one (it accepts the
  connection and never answers: each delivery waits out the timeout).

    python bench/webhooks.py [--requests 200] [--setups embedded,production]

Writes bench/results/webhooks.json and prints a table.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from setups import SETUPS, free_port, install  # bench/setups.py, beside this script

REPO = Path(__file__).resolve().parent.parent
# bench/serving.py's install and server helpers (loaded by path: "serving" is also the app's package)
_spec = importlib.util.spec_from_file_location("bench_serving", Path(__file__).with_name("serving.py"))
assert _spec is not None and _spec.loader is not None
bench_serving = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_serving)
_server, _run, _stop, _wait_ready = (
    bench_serving._server,
    bench_serving._run,
    bench_serving._stop,
    bench_serving._wait_ready,
)
RESULTS = REPO / "bench" / "results" / "webhooks.json"

SETUP = r"""
import json, sys
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from config.celery import app
app.conf.task_always_eager = True  # import, embed, index and training in this process
from collections import Counter
from django.contrib.auth.models import User
from labeling import game
from labeling import services as labeling
from serving.versions import services as serving
from serving.models import ApiKey
from trackers import services
from trackers import imports
from trackers.demo import demo_zip
from trackers.models import Membership, Role, Segment, Workspace

owner = User.objects.create_user("owner", password="x")
ws = Workspace.objects.create(name="Webhooks bench")
Membership.objects.create(workspace=ws, user=owner, role=Role.OWNER)
ds = services.create_dataset(workspace=ws, name="Demo calls")
imports.start_import(dataset=ds, user=owner, filename="demo.zip", data=demo_zip(int(sys.argv[1])))
ds.refresh_from_db()
segments = list(Segment.objects.filter(dataset=ds).order_by("pk"))
words = Counter(w for s in segments for w in set(s.text.lower().split()) if len(w) > 4 and w.isalpha())
word = next(w for w, n in words.most_common() if 30 <= n <= len(segments) // 4)
tracker = labeling.create_tracker(workspace=ws, user=owner, name=f"mentions {word}", datasets=[ds],
                                  seeds=[s.text for s in segments if word in s.text.lower()][:3], round_size=10)
for s in [s for s in segments if word in s.text.lower().split()][:25]:
    game.record_label(tracker, owner, segment=s, answer="yes")
for s in [s for s in segments if word not in s.text.lower()][:50]:
    game.record_label(tracker, owner, segment=s, answer="no")
labeling.request_training(tracker)
assert serving.live_version(tracker) is not None
key = ApiKey.issue(workspace=ws, name="bench", created_by=owner, role=Role.OWNER)[1]
texts = [s.text for s in segments if word in s.text.lower().split()]
print(json.dumps({"key": key, "tracker": str(tracker.code), "dataset": str(ds.code), "word": word, "texts": texts}))
"""

STEPS = r"""
import json, sys
import django
django.setup()
from serving.models import DeliveryAttempt
out = {}
for a in DeliveryAttempt.objects.filter(number=1, delivery__event__source=sys.argv[1]).select_related("delivery__event"):
    d = a.delivery
    out[d.event.webhook_id] = {"claimed": d.started_at.timestamp() if d.started_at else None,
                               "attempt": a.started_at.timestamp()}
print(json.dumps(out))
"""


class Receiver:
    """Records the first arrival of each webhook-id, with the event's own timestamp."""

    def __init__(self, dead: bool = False):
        self.first: dict[str, tuple[float, float, str]] = {}  # id -> (received, event time, source)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                now = time.time()
                if dead:
                    time.sleep(3600)  # never answers: the delivery waits out its timeout
                    return
                payload = json.loads(body)
                at = datetime.fromisoformat(payload["timestamp"]).timestamp()
                with receiver.lock:
                    receiver.first.setdefault(
                        self.headers["webhook-id"], (now, at, payload["data"].get("source", ""))
                    )
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def of(self, source: str) -> list[tuple[float, float]]:
        with self.lock:
            return [(got, at) for got, at, s in self.first.values() if s == source]

    def steps(self, source: str, env: dict[str, str]) -> dict[str, dict[str, float]]:
        """Where the time from match to receipt goes: to the worker's claim, to the attempt's start,
        and from it to the receipt."""
        stored = _run(STEPS, env, source)
        parts: dict[str, list[float]] = {
            "match_to_claim": [],
            "claim_to_attempt": [],
            "attempt_to_receipt": [],
        }
        with self.lock:
            for webhook_id, (got, at, s) in self.first.items():
                row = stored.get(webhook_id)
                if s != source or row is None or row["claimed"] is None:
                    continue
                parts["match_to_claim"].append(row["claimed"] - at)
                parts["claim_to_attempt"].append(row["attempt"] - row["claimed"])
                parts["attempt_to_receipt"].append(got - row["attempt"])
        return {name: _ms(values) for name, values in parts.items() if values}


def _call(
    port: int,
    method: str,
    path: str,
    key: str,
    body: object = None,
    raw: bytes | None = None,
    content_type: str = "application/json",
) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"Authorization": f"Bearer {key}"}
    if data is not None:
        headers["Content-Type"] = content_type
    conn.request(method, path, data, headers)
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response.status, (json.loads(payload) if payload else {})


def _workers(env: dict[str, str], tmp: Path) -> list[subprocess.Popen]:
    celery = [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel=WARNING"]
    specs = [
        [
            "--concurrency=1",
            "-Q",
            "interactive",
            "-n",
            "interactive@%h",
            "--beat",
            f"--schedule={tmp / 'beat'}",
        ],
        ["--concurrency=1", "-Q", "bulk", "-n", "bulk@%h"],
        ["--pool=threads", "--concurrency=8", "-Q", "webhooks", "-n", "webhooks@%h"],
    ]
    return [
        subprocess.Popen(
            celery + spec,
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp / f"worker-{i}.log", "ab"),  # noqa: SIM115 (held while it runs)
            start_new_session=True,
        )
        for i, spec in enumerate(specs)
    ]


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


def _ms(values: list[float]) -> dict[str, float]:
    a = np.asarray(values) * 1000
    return {"n": len(a), "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99))}


def _endpoint(port: int, key: str, tracker: str, url: str) -> str:
    status, made = _call(
        port,
        "POST",
        f"/api/v1/trackers/{tracker}/webhooks",
        key,
        {"url": url, "from_api": True, "grouping": "text"},
    )
    if status != 201:
        raise SystemExit(f"could not make an endpoint: {status} {made}")
    return made["code"]


def _predict_p50(
    port: int, key: str, tracker: str, texts: list[str], n: int
) -> tuple[float, list[tuple[float, str]]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    sent, times = [], []
    for i in range(n):
        body = json.dumps({"texts": [f"{texts[i % len(texts)]} ({i})"], "alert": True}).encode()
        started = time.perf_counter()
        wall = time.time()
        conn.request("POST", f"/api/v1/trackers/{tracker}/predict", body, headers)
        response = conn.getresponse()
        answer = json.loads(response.read())
        times.append(time.perf_counter() - started)
        if response.status != 200:
            raise SystemExit(f"predict answered {response.status}: {answer}")
        if answer["results"][0]["match"]:
            sent.append((wall, body.decode()))
    conn.close()
    return float(np.percentile(np.asarray(times) * 1000, 50)), sent


def measure(setup_name: str, tmp: Path, args: argparse.Namespace) -> dict:
    """One setup's numbers."""
    procs: list[subprocess.Popen] = []
    with install(setup_name, tmp / setup_name, "webhooks") as env:
        env.update(TRACKERS_WEBHOOK_ALLOW_PRIVATE_TARGETS="1", TRACKERS_WEBHOOK_TIMEOUT_SECONDS="15")
        try:
            return _measure(setup_name, env, tmp / setup_name, args, procs)
        finally:
            for proc in procs:
                _stop(proc)


def _measure(setup_name: str, env: dict[str, str], tmp: Path, args: argparse.Namespace, procs: list) -> dict:
    """The setup made, the server and workers started (into ``procs``), then each measurement."""
    print(f"{setup_name}: setting up the demo corpus and a trained tracker…", flush=True)
    setup = _run(SETUP, env, str(args.calls))
    key, tracker = setup["key"], setup["tracker"]
    port = free_port()
    procs.append(_server("config.wsgi:application", port, env, os.cpu_count() or 2, tmp / "server.log"))
    procs.extend(_workers(env, tmp))
    probe = {"texts": [setup["texts"][0]]}
    _wait_ready(port, f"/api/v1/trackers/{tracker}/predict", probe, {"Authorization": f"Bearer {key}"})
    results: dict = {"setup": SETUPS[setup_name], "keyword": setup["word"]}

    print("prediction p50 with no endpoint…", flush=True)
    p50_none, _ = _predict_p50(port, key, tracker, setup["texts"], args.requests)

    receiver = Receiver()
    endpoint = _endpoint(port, key, tracker, receiver.url)
    print("the prediction API as a source…", flush=True)
    p50_healthy, sent = _predict_p50(port, key, tracker, setup["texts"], args.requests)
    _wait(lambda: len(receiver.of("api")) >= len(sent), 120, "every API match to arrive")
    api = receiver.of("api")
    results["api"] = {
        "match_to_receipt": _ms([got - at for got, at in api]),
        "steps": receiver.steps("api", env),
        "matches": len(sent),
    }

    print("bulk scoring as a source…", flush=True)
    status, job = _call(
        port, "POST", f"/api/v1/datasets/{setup['dataset']}/score", key, {"trackers": [tracker]}
    )
    if status != 202:
        raise SystemExit(f"scoring answered {status}: {job}")
    _wait(
        lambda: _call(port, "GET", f"/api/v1/scoring/{job['code']}", key)[1]["state"] == "succeeded",
        300,
        "the scoring job",
    )
    matches = sum(
        t["matches"] for t in _call(port, "GET", f"/api/v1/scoring/{job['code']}", key)[1]["trackers"]
    )
    _wait(lambda: len(receiver.of("bulk")) >= matches, 300, "every bulk match to arrive")
    results["bulk"] = {
        "match_to_receipt": _ms([got - at for got, at in receiver.of("bulk")]),
        "matches": matches,
    }

    print("an import as a source…", flush=True)
    calls = []
    for i, text in enumerate(setup["texts"][:20]):
        turns = [
            {"speaker": "agent", "text": f"hello, thanks for calling ({i})"},
            {"speaker": "customer", "text": f"{text} (new call {i})"},
        ]
        calls.append(json.dumps({"id": f"bench-{i}", "title": f"Bench call {i}", "turns": turns}))
    boundary = "trackersbench"
    form = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="calls.jsonl"\r\n'
        f"Content-Type: application/x-ndjson\r\n\r\n" + "\n".join(calls) + f"\n\r\n--{boundary}--\r\n"
    ).encode()
    uploaded = time.time()
    status, imported = _call(
        port,
        "POST",
        f"/api/datasets/{setup['dataset']}/imports",
        key,
        raw=form,
        content_type=f"multipart/form-data; boundary={boundary}",
    )
    if status != 202:
        raise SystemExit(f"import answered {status}: {imported}")
    _wait(lambda: receiver.of("import"), 300, "the first alert of the import")
    time.sleep(3)  # the rest of the import's matches
    got = receiver.of("import")
    results["import"] = {
        "match_to_receipt": _ms([g - at for g, at in got]),
        "upload_to_first_receipt_ms": (min(g for g, _ in got) - uploaded) * 1000,
        "matches": len(got),
    }
    receiver.close()

    print("prediction p50 with a dead receiver…", flush=True)
    dead = Receiver(dead=True)
    _call(port, "DELETE", f"/api/v1/webhooks/{endpoint}", key)
    _endpoint(port, key, tracker, dead.url)
    p50_dead, _ = _predict_p50(port, key, tracker, setup["texts"], args.requests)
    results["prediction_p50_ms"] = {
        "no_endpoint": p50_none,
        "healthy_receiver": p50_healthy,
        "dead_receiver": p50_dead,
    }
    dead.server.server_close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200, help="prediction requests per measurement")
    parser.add_argument("--calls", type=int, default=60, help="demo calls in the dataset")
    parser.add_argument("--setups", default="embedded,production")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="trackers-webhooks-"))
    results: dict = {"machine": {"cpus": os.cpu_count()}}
    try:
        for setup_name in args.setups.split(","):
            results[setup_name] = measure(setup_name, tmp, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    for setup_name in args.setups.split(","):
        print(f"\n{setup_name}: {SETUPS[setup_name]}")
        table(results[setup_name])
    print(f"\nwritten to {RESULTS.relative_to(REPO)}")


def table(r: dict) -> None:
    print(f"\n{'match to receipt':34} {'p50 (ms)':>10} {'p99 (ms)':>10} {'events':>8}")
    for source in ("api", "bulk", "import"):
        m = r[source]["match_to_receipt"]
        print(f"{source:34} {m['p50_ms']:10.1f} {m['p99_ms']:10.1f} {m['n']:8d}")
        for step, t in r[source].get("steps", {}).items():
            print(f"  {step.replace('_', ' '):32} {t['p50_ms']:10.1f} {t['p99_ms']:10.1f}")
    print(f"{'import: upload to first receipt':34} {r['import']['upload_to_first_receipt_ms']:10.0f}")
    p = r["prediction_p50_ms"]
    print(
        f"\nprediction p50 (ms): no endpoint {p['no_endpoint']:.2f}, healthy receiver {p['healthy_receiver']:.2f}, "
        f"dead receiver {p['dead_receiver']:.2f}"
    )


if __name__ == "__main__":
    main()
