"""Concurrent labelers against the real web stack: answers/s, latency, errors, lost or doubled answers.

For each backend — the embedded default (SQLite and the embedded Redis) and PostgreSQL + Redis — this
makes a fresh install in a temporary folder (migrate, the demo corpus imported and embedded with
the real encoder, labelers with API keys, trackers with 200-card rounds), starts granian as
`make run` does, and has 4 and then 16 labelers claim and answer cards over HTTP for a fixed time,
each answer posted twice (a double press). Afterwards the database is counted: every answer the
server acknowledged with 201 must be one stored row, and no card may hold two. Then, with an
interactive and a bulk worker as `make run` starts them, it times small trackers' training (last
answer to finished run) idle and while the bulk worker embeds a 6,000-row import. Last, a fresh bulk
worker is given a zip bomb (10 MB expanding to 10 GB) uploaded through the API, and its pool
process's peak memory is compared with its memory before.

    python bench/load.py [--seconds 30] [--backends sqlite,postgres]

Writes bench/results/load.json and prints a table. Labelers are threads of this process: on two
cores they and the server share the CPU, as they would on a small install.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "load.json"
LABELERS = (4, 16)
TRACKERS = 24  # 200 cards each: more than the labelers can answer in the time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def embedded_redis(env: dict[str, str]) -> Iterator[None]:
    """The embedded Redis of an install with no REDIS_URL, started as `make run` starts it (the same
    command, config.run.redis_argv, on the same socket under its data folder); nothing otherwise."""
    if env.get("REDIS_URL"):
        yield
        return
    sys.path.insert(0, str(REPO))
    import redis

    from config.run import redis_argv
    from config.settings import unix_socket

    data = Path(env["TRACKERS_DATA_DIR"])
    sock = unix_socket(data, "redis.sock")
    server = subprocess.Popen(redis_argv(sock, data / "redis"), stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(unix_socket_path=str(sock))
        for _ in range(100):
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.1)
        yield
    finally:
        server.terminate()
        server.wait(30)


def _env(backend: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TRACKERS_", "PYTEST"))}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        TRACKERS_DATA_DIR=str(data_dir),
        TRACKERS_LOCAL_HTTP="1",
        TRACKERS_ENCODER_DIR=str(REPO / "var" / "artifacts" / "encoders" / "all-MiniLM-L6-v2"),
        HF_HUB_OFFLINE="1",
    )
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    if backend == "postgres":
        name = f"trackers_load_{os.getpid()}"
        env.update(
            DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{name}",
            REDIS_URL="redis://127.0.0.1:6379/14",
            TRACKERS_BROKER_KEY_PREFIX=f"load-{os.getpid()}:",
        )
    return env


SETUP = r"""
import json, sys
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from config.celery import app
app.conf.task_always_eager = True  # import, embed and index in this process, through the tasks
from django.contrib.auth.models import User
from labeling import services as labeling
from serving.models import ApiKey
from trackers import services
from trackers import imports
from trackers.demo import demo_zip
from trackers.models import Dataset, Membership, Role, Workspace

owner = User.objects.create_user("owner", password="x")
ws = Workspace.objects.create(name="Load")
Membership.objects.create(workspace=ws, user=owner, role=Role.OWNER)
ds = services.create_dataset(workspace=ws, name="Demo calls")
imports.start_import(dataset=ds, user=owner, filename="demo.zip", data=demo_zip(150))
ds.refresh_from_db()
keys = []
for i in range(int(sys.argv[1])):
    user = User.objects.create_user(f"labeler{i}", password="x")
    Membership.objects.create(workspace=ws, user=user, role=Role.LABELER)
    keys.append(ApiKey.issue(workspace=ws, name=f"labeler {i}", created_by=user, role=Role.LABELER)[1])
seeds = ["the price is too high", "we are looking at another vendor", "can you send the invoice"]
trackers = [
    str(labeling.create_tracker(workspace=ws, user=owner, name=f"Tracker {t}", datasets=[ds], seeds=seeds,
                                round_size=200).code)
    for t in range(int(sys.argv[2]))
]
owner_key = ApiKey.issue(workspace=ws, name="owner", created_by=owner, role=Role.OWNER)[1]
print(json.dumps({"keys": keys, "trackers": trackers, "segments": ds.vector_count, "owner_key": owner_key,
                  "workspace": str(ws.code), "dataset": str(ds.code)}))
"""

IMPORT = r"""
import json, sys
import django
django.setup()
from django.contrib.auth.models import User
from trackers import services
from trackers.models import Dataset

days = ["monday", "tuesday", "wednesday", "thursday", "friday"]
topics = ["pricing", "renewal", "invoice", "onboarding", "support", "contract", "discount", "migration"]
rows = [f"customer {i} asked about {topics[i % 8]} on {days[i % 5]} and call {i * 7 % 1000}" for i in range(6000)]
ds = Dataset.objects.get(code=sys.argv[1])
job = imports.start_import(dataset=ds, user=User.objects.get(username="owner"), filename="bulk.csv",
                            data=("text\n" + "\n".join(rows) + "\n").encode())
print(json.dumps({"job": str(job.code)}))
"""

EMBED_STATE = r"""
import json, sys
import django
django.setup()
from trackers.models import Job, JobKind
job = Job.objects.filter(kind=JobKind.EMBED, params__after=sys.argv[1]).first()
print(json.dumps({"state": job.state if job else "not started"}))
"""

COUNT = r"""
import json, sys
import django
django.setup()
from django.db.models import Count
from labeling.models import Annotation, Card
doubled = Annotation.objects.values("tracker", "segment", "annotator").annotate(n=Count("id")).filter(n__gt=1).count()
per_card = Annotation.objects.values("card").annotate(n=Count("id")).filter(n__gt=1).count()
print(json.dumps({"rows": Annotation.objects.count(), "cards_with_two_answers": per_card,
                  "doubled_rows": doubled, "answered_cards": Card.objects.filter(answered_at__isnull=False).count()}))
"""


def _run(code: str, env: dict[str, str], *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    if done.returncode:
        raise SystemExit(f"setup failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _post(url: str, key: str, body: dict | None = None) -> tuple[int, object, float]:
    data = json.dumps(body).encode() if body is not None else b""
    request = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, payload = response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, None
    except OSError:
        status, payload = 0, None
    return status, payload, time.perf_counter() - t0


def _get(url: str, key: str) -> tuple[int, object]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def training_latency(base: str, setup: dict, tag: str, n: int = 7) -> list[float]:
    """Seconds from a round's last answer to its finished training run, for ``n`` new small trackers
    (after one more whose time is not counted: it warms the worker up)."""
    owner, labeler = setup["owner_key"], setup["keys"][0]
    seeds = ["the price is too high", "we are looking at another vendor", "can you send the invoice"]
    out = []
    for i in range(n + 1):
        body = {
            "name": f"Latency {tag} {i}",
            "datasets": [setup["dataset"]],
            "seeds": seeds,
            "round_size": 10,
        }
        status, tracker, _ = _post(f"{base}/api/workspaces/{setup['workspace']}/trackers", owner, body)
        assert status == 201 and isinstance(tracker, dict), (status, tracker)
        code = tracker["code"]
        last = time.perf_counter()
        while True:
            status, cards, _ = _post(f"{base}/api/trackers/{code}/cards?n=5", labeler)
            cards = [c for c in cards or [] if c["round"] == 1]
            if not cards:
                break
            for card in cards:
                answer = "yes" if "price" in card["text"].lower() else "no"
                _post(f"{base}/api/trackers/{code}/labels", labeler, {"card": card["id"], "answer": answer})
                last = time.perf_counter()
        while time.perf_counter() - last < 300:
            _, runs = _get(f"{base}/api/trackers/{code}/runs", owner)
            if isinstance(runs, list) and runs and runs[-1]["state"] in ("succeeded", "failed"):
                if i:
                    out.append(time.perf_counter() - last)
                break
            time.sleep(0.05)
    return out


def _workers(
    env: dict[str, str], tmp: Path, queues: tuple[str, ...] = ("interactive", "bulk")
) -> list[subprocess.Popen]:
    """An interactive and a bulk worker, as `make run` starts them (queues purged of earlier messages)."""
    celery = [sys.executable, "-m", "celery", "-A", "config"]
    subprocess.run([*celery, "purge", "-f", "-Q", "interactive,bulk"], cwd=REPO, env=env, capture_output=True)
    procs = []
    for queue in queues:
        log = open(tmp / f"{queue}.log", "ab")  # noqa: SIM115 (the worker holds it until it stops)
        procs.append(
            subprocess.Popen(
                [
                    *celery,
                    "worker",
                    "-Q",
                    queue,
                    "-n",
                    f"{queue}-load@%h",
                    "--concurrency=1",
                    "--loglevel=WARNING",
                ],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    return procs


def zip_bomb(path: Path, members: int = 10, member_bytes: int = 1 << 30) -> Path:
    """A zip of ``members`` files of zeros, ``member_bytes`` each (10 GB in about 10 MB), made once."""
    if not path.exists():
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            zeros = bytes(1 << 20)
            for i in range(members):
                with archive.open(f"call-{i}.txt", "w") as member:
                    for _ in range(member_bytes // len(zeros)):
                        member.write(zeros)
    return path


def _memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def _pool_child(pid: int) -> int:
    """The one pool process of a ``--concurrency=1`` worker: it runs the tasks."""
    for _ in range(100):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.2)
    raise RuntimeError("the worker started no pool process")


def _upload(url: str, key: str, path: Path) -> tuple[int, object]:
    boundary = "trackers-load-" + os.urandom(8).hex()
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
            "Content-Type: application/zip\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Authorization": f"Bearer {key}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def bomb_memory(base: str, setup: dict, env: dict[str, str], tmp: Path, bomb: Path) -> dict:
    """Peak memory of a fresh bulk worker while it refuses a 10 GB zip bomb uploaded through the API."""
    (worker,) = _workers(env, tmp, queues=("bulk",))
    try:
        child = _pool_child(worker.pid)
        time.sleep(5)  # settled
        idle_kb = _memory_kb(child, "VmRSS")
        status, job = _upload(f"{base}/api/datasets/{setup['dataset']}/imports", setup["owner_key"], bomb)
        assert status == 202 and isinstance(job, dict), (status, job)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            _, job = _get(f"{base}/api/jobs/{job['code']}", setup["owner_key"])
            if isinstance(job, dict) and job["state"] in ("succeeded", "failed"):
                break
            time.sleep(0.2)
        peak_kb = _memory_kb(child, "VmHWM")  # the pool process's peak since it started
    finally:
        worker.terminate()
        worker.wait(60)
    assert isinstance(job, dict)
    return {
        "bomb_bytes": bomb.stat().st_size,
        "expands_to_bytes": sum(i.file_size for i in zipfile.ZipFile(bomb).infolist()),
        "job_state": job["state"],
        "message": job["message"],
        "worker_idle_mb": round(idle_kb / 1024, 1),
        "worker_peak_mb": round(peak_kb / 1024, 1),
        "growth_mb": round((peak_kb - idle_kb) / 1024, 1),
    }


def play(base: str, keys: list[str], trackers: list[str], seconds: float) -> dict:
    """``len(keys)`` labelers for ``seconds``: claim two cards, answer each twice, move on when a round is done."""
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    created = 0
    deadline = time.monotonic() + seconds

    def labeler(i: int, key: str) -> None:
        nonlocal created
        t = i % len(trackers)
        mine, mine_created, codes = [], 0, {}
        while time.monotonic() < deadline:
            code = trackers[t]
            status, cards, _ = _post(f"{base}/api/trackers/{code}/cards?n=2", key)
            if status != 200 or not cards:
                t = (t + 1) % len(trackers)  # this tracker's round is answered: the next one
                continue
            for card in cards:
                answer = "yes" if "price" in card["text"].lower() else "no"
                for _ in range(2):  # a double press: the second must be a harmless 200
                    status, _, seconds_taken = _post(
                        f"{base}/api/trackers/{code}/labels", key, {"card": card["id"], "answer": answer}
                    )
                    mine.append(seconds_taken)
                    codes[status] = codes.get(status, 0) + 1
                    mine_created += status == 201
        with lock:
            latencies.extend(mine)
            created += mine_created
            for s, n in codes.items():
                statuses[s] = statuses.get(s, 0) + n

    threads = [threading.Thread(target=labeler, args=(i, k)) for i, k in enumerate(keys)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    errors = sum(n for s, n in statuses.items() if s not in (200, 201))
    return {
        "labelers": len(keys),
        "seconds": round(elapsed, 1),
        "answers": created,
        "answers_per_s": round(created / elapsed, 1),
        "posts": int(len(lat)),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        "errors": errors,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


def bench_backend(backend: str, seconds: float, bomb: Path) -> tuple[list[dict], dict, dict]:
    with tempfile.TemporaryDirectory(prefix=f"trackers-load-{backend}-") as tmp:
        env = _env(backend, Path(tmp))
        if backend == "postgres":
            name = env["DATABASE_URL"].rsplit("/", 1)[1]
            subprocess.run(
                ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"CREATE DATABASE {name}"], check=True
            )
        services = contextlib.ExitStack()
        try:
            services.enter_context(embedded_redis(env))
            setup = _run(SETUP, env, str(max(LABELERS)), str(TRACKERS))
            port = _free_port()
            server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "config.serve",
                    "--port",
                    str(port),
                    "--workers",
                    str(os.cpu_count() or 2),
                ],
                cwd=REPO,
                env=env,
            )
            try:
                base = f"http://127.0.0.1:{port}"
                for _ in range(100):
                    try:
                        urllib.request.urlopen(f"{base}/accounts/login/", timeout=2)
                        break
                    except OSError:
                        time.sleep(0.2)
                rows = []
                before = 0
                for n in LABELERS:
                    row = play(base, setup["keys"][:n], setup["trackers"], seconds)
                    counted = _run(COUNT, env)
                    row.update(
                        backend=backend,
                        stored=counted["rows"] - before,
                        lost=max(0, row["answers"] - (counted["rows"] - before)),
                        duplicated=counted["cards_with_two_answers"] + counted["doubled_rows"],
                    )
                    before = counted["rows"]
                    rows.append(row)
                workers = _workers(env, Path(tmp))
                try:
                    time.sleep(5)  # the workers load the encoder
                    idle = training_latency(base, setup, f"{backend} idle")
                    job = _run(IMPORT, env, setup["dataset"])["job"]
                    time.sleep(3)  # the bulk worker is embedding 6,000 texts now
                    busy = training_latency(base, setup, f"{backend} busy")
                    embedding = _run(EMBED_STATE, env, job)["state"]
                finally:
                    for w in workers:
                        w.terminate()
                    for w in workers:
                        w.wait(60)
                training = {
                    "backend": backend,
                    "idle_s": [round(x, 2) for x in idle],
                    "during_import_s": [round(x, 2) for x in busy],
                    "idle_median_s": round(float(np.median(idle)), 2) if idle else None,
                    "during_import_median_s": round(float(np.median(busy)), 2) if busy else None,
                    "embedding_after": embedding,  # "running": the trainings overlapped the embedding
                }
                refused = {"backend": backend, **bomb_memory(base, setup, env, Path(tmp), bomb)}
                return rows, training, refused
            finally:
                server.terminate()
                server.wait(30)
        finally:
            services.close()
            if backend == "postgres":
                subprocess.run(
                    [
                        "psql",
                        "-h",
                        "127.0.0.1",
                        "-U",
                        "postgres",
                        "-qc",
                        f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",
                    ]
                )
                import redis

                broker = redis.Redis.from_url(env["REDIS_URL"])
                for key in broker.scan_iter(match=f"{env['TRACKERS_BROKER_KEY_PREFIX']}*", count=500):
                    broker.delete(key)  # the training messages no worker took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--backends", default="sqlite,postgres")
    opts = parser.parse_args()
    rows, trainings, bombs = [], [], []
    with tempfile.TemporaryDirectory(prefix="trackers-bomb-") as tmp:
        bomb = zip_bomb(Path(tmp) / "bomb.zip")
        for backend in opts.backends.split(","):
            labeling_rows, training, refused = bench_backend(backend, opts.seconds, bomb)
            rows += labeling_rows
            trainings.append(training)
            bombs.append(refused)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "seconds": opts.seconds,
        "cpu_count": os.cpu_count(),
        "runs": rows,
        "training": trainings,
        "zip_bomb": bombs,
    }
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"{'backend':<9} {'labelers':>8} {'answers/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
        f"{'answers':>7} {'stored':>6} {'lost':>4} {'doubled':>7}"
    )
    for r in rows:
        print(
            f"{r['backend']:<9} {r['labelers']:>8} {r['answers_per_s']:>9} {r['p50_ms']:>7} {r['p99_ms']:>7} "
            f"{r['errors']:>6} {r['answers']:>7} {r['stored']:>6} {r['lost']:>4} {r['duplicated']:>7}"
        )
    print(
        f"\n{'backend':<9} {'training idle s':>15} {'during a 6,000-row import s':>28} {'ratio':>6}  import job"
    )
    for t in trainings:
        idle, busy = t["idle_median_s"], t["during_import_median_s"]
        ratio = round(busy / idle, 2) if idle and busy else None
        print(f"{t['backend']:<9} {idle!s:>15} {busy!s:>28} {ratio!s:>6}  {t['embedding_after']}")
    print(f"\n{'backend':<9} {'zip bomb':>18} {'worker idle MB':>14} {'peak MB':>8} {'growth MB':>9}  job")
    for b in bombs:
        size = f"{b['bomb_bytes'] / 1e6:.1f} MB -> {b['expands_to_bytes'] / 1e9:.1f} GB"
        print(
            f"{b['backend']:<9} {size:>18} {b['worker_idle_mb']:>14} {b['worker_peak_mb']:>8} "
            f"{b['growth_mb']:>9}  {b['job_state']}: {b['message']}"
        )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
