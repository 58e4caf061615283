"""Concurrent labelers against the real web stack: answers/s, latency, errors, lost or doubled answers.

For each setup (``bench/setups.py``: the embedded default, SQLite and the embedded Redis; and
PostgreSQL with Redis) this makes a fresh install in a temporary folder (migrate, the demo corpus
imported and embedded with the real encoder, labelers with API keys, trackers with 20-card rounds),
starts granian, an interactive worker and a bulk worker as `make run` does, and has 4 and then 16
labelers claim and answer cards over HTTP for a fixed time. Four labelers share each tracker, so they
race for its cards; each answer is posted twice at the same moment from two connections (a double
press); and rounds end, so the time labelers wait while a round trains and the next one is chosen is
counted in answers/s, with the rounds and training runs it took. Afterwards the database is
counted: every answer the server acknowledged with 201 must be one stored row, no card may hold two
and no double press may store two. Then it times small trackers' training (last answer to finished
run) idle and while the bulk worker embeds a 6,000-row import. Last, a fresh bulk worker is given a
zip bomb (10 MB expanding to 10 GB) uploaded through the API, and its pool process's peak memory is
compared with its memory before.

    python bench/load.py [--seconds 30] [--setups embedded,production]

Writes bench/results/load.json and prints a table. Labelers are threads of this process: on two
cores they and the server share the CPU, as they would on a small install. The per-key rate of /api/ is
raised for the run (TRACKERS_API_RATE): labelers waiting for a round poll for cards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
from setups import free_port, install  # bench/setups.py, beside this script

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "load.json"
LABELERS = (4, 16)
SHARING = 4  # labelers on each tracker
ROUND = 20  # cards of a round: several rounds end in a run


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
# More distinct texts than the labelers can answer in a run (the demo calls hold about 700).
products = ["plan", "invoice", "seat", "licence", "renewal", "discount", "contract", "migration", "export", "report"]
moods = ["the price is too high", "we love it", "it keeps failing", "can you call me back", "we may switch vendor",
         "thanks for the help", "send me the details", "we need it by friday"]
rows = [f"about the {products[i % 10]} of account {i}: {moods[i // 10 % 8]} ({i * 37 % 1009})" for i in range(4000)]
more = services.create_dataset(workspace=ws, name="Support notes")
imports.start_import(dataset=more, user=owner, filename="notes.csv", data=("text\n" + "\n".join(rows) + "\n").encode())
ds.refresh_from_db()
more.refresh_from_db()
keys = []
for i in range(int(sys.argv[1])):
    user = User.objects.create_user(f"labeler{i}", password="x")
    Membership.objects.create(workspace=ws, user=user, role=Role.LABELER)
    keys.append(ApiKey.issue(workspace=ws, name=f"labeler {i}", created_by=user, role=Role.LABELER)[1])
seeds = ["the price is too high", "we are looking at another vendor", "can you send the invoice"]
trackers = [
    str(labeling.create_tracker(workspace=ws, user=owner, name=f"Tracker {t}", datasets=[ds, more], seeds=seeds,
                                round_size=int(sys.argv[3])).code)
    for t in range(int(sys.argv[2]))
]
owner_key = ApiKey.issue(workspace=ws, name="owner", created_by=owner, role=Role.OWNER)[1]
print(json.dumps({"keys": keys, "trackers": trackers, "segments": ds.vector_count + more.vector_count, "owner_key": owner_key,
                  "workspace": str(ws.code), "dataset": str(ds.code)}))
"""

IMPORT = r"""
import json, sys
import django
django.setup()
from django.contrib.auth.models import User
from trackers import imports
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
from django.db.models import Count, Max
from labeling.models import Annotation, Card, TrainingRun
doubled = Annotation.objects.values("tracker", "segment", "annotator").annotate(n=Count("id")).filter(n__gt=1).count()
per_card = Annotation.objects.values("card").annotate(n=Count("id")).filter(n__gt=1).count()
rounds = Card.objects.values("tracker").annotate(last=Max("round"))
print(json.dumps({"rows": Annotation.objects.count(), "cards_with_two_answers": per_card,
                  "doubled_rows": doubled, "answered_cards": Card.objects.filter(answered_at__isnull=False).count(),
                  "rounds": sum(r["last"] for r in rounds),
                  "runs_succeeded": TrainingRun.objects.filter(state="succeeded").count()}))
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
    """``len(keys)`` labelers for ``seconds``, ``SHARING`` on each tracker: claim two cards, answer
    each with two posts sent at the same moment (a double press), and wait for the next round when a
    round is done (its training and the choice of its cards happen meanwhile)."""
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    created = pairs_both_created = 0
    waited = 0.0
    deadline = time.monotonic() + seconds

    def press_twice(url: str, key: str, body: dict) -> list[tuple[int, float]]:
        """Two posts of one answer, released together from two connections."""
        gate = threading.Barrier(2)
        out: list[tuple[int, float]] = []

        def one() -> None:
            gate.wait()
            status, _, taken = _post(url, key, body)
            out.append((status, taken))

        second = threading.Thread(target=one)
        second.start()
        one()
        second.join()
        return out

    def labeler(i: int, key: str) -> None:
        nonlocal created, pairs_both_created, waited
        code = trackers[(i // SHARING) % len(trackers)]
        mine, mine_created, both, idle, codes = [], 0, 0, 0.0, {}
        while time.monotonic() < deadline:
            status, cards, _ = _post(f"{base}/api/trackers/{code}/cards?n=2", key)
            if status != 200 or not cards:
                started = time.monotonic()
                time.sleep(0.2)  # the round is answered: its training and the next round are on the way
                idle += time.monotonic() - started
                continue
            for card in cards:
                answer = "yes" if "price" in card["text"].lower() else "no"
                body = {"card": card["id"], "answer": answer}
                presses = press_twice(f"{base}/api/trackers/{code}/labels", key, body)
                for status, taken in presses:
                    mine.append(taken)
                    codes[status] = codes.get(status, 0) + 1
                made = sum(status == 201 for status, _ in presses)
                mine_created += made
                both += made > 1
        with lock:
            latencies.extend(mine)
            created += mine_created
            pairs_both_created += both
            waited += idle
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
        "trackers": min(len(trackers), -(-len(keys) // SHARING)),
        "seconds": round(elapsed, 1),
        "answers": created,
        "answers_per_s": round(created / elapsed, 1),
        "posts": int(len(lat)),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        "errors": errors,
        "double_presses_stored_twice": pairs_both_created,
        "waiting_share": round(waited / (elapsed * len(keys)), 3),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


def bench_setup(setup: str, seconds: float, bomb: Path) -> tuple[list[dict], dict, dict]:
    with (
        tempfile.TemporaryDirectory(prefix=f"trackers-load-{setup}-") as tmp,
        install(setup, Path(tmp) / "var", "load") as env,
    ):
        env["TRACKERS_API_RATE"] = (
            "1000000/m"  # labelers poll while a round is prepared: not what is measured
        )
        runs = [
            -(-n // SHARING) for n in LABELERS
        ]  # each run has trackers of its own, shared by SHARING labelers
        made = _run(SETUP, env, str(max(LABELERS)), str(sum(runs)), str(ROUND))
        port = free_port()
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
        workers = _workers(env, Path(tmp))
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"{base}/accounts/login/", timeout=2)
                    break
                except OSError:
                    time.sleep(0.2)
            time.sleep(5)  # the workers load the encoder
            rows = []
            before = _run(COUNT, env)
            for n, first in zip(LABELERS, np.cumsum([0, *runs[:-1]]).tolist(), strict=True):
                mine = made["trackers"][first : first + -(-n // SHARING)]
                row = play(base, made["keys"][:n], mine, seconds)
                counted = _run(COUNT, env)
                stored = counted["rows"] - before["rows"]
                row.update(
                    setup=setup,
                    stored=stored,
                    lost=max(0, row["answers"] - stored),
                    duplicated=counted["cards_with_two_answers"] + counted["doubled_rows"],
                    rounds_ended=counted["rounds"] - before["rounds"],
                    trainings=counted["runs_succeeded"] - before["runs_succeeded"],
                )
                before = counted
                rows.append(row)
            idle = training_latency(base, made, f"{setup} idle")
            job = _run(IMPORT, env, made["dataset"])["job"]
            time.sleep(3)  # the bulk worker is embedding 6,000 texts now
            busy = training_latency(base, made, f"{setup} busy")
            embedding = _run(EMBED_STATE, env, job)["state"]
        finally:
            for w in workers:
                w.terminate()
            for w in workers:
                w.wait(60)
        try:
            training = {
                "setup": setup,
                "idle_s": [round(x, 2) for x in idle],
                "during_import_s": [round(x, 2) for x in busy],
                "idle_median_s": round(float(np.median(idle)), 2) if idle else None,
                "during_import_median_s": round(float(np.median(busy)), 2) if busy else None,
                "embedding_after": embedding,  # "running": the trainings overlapped the embedding
            }
            refused = {"setup": setup, **bomb_memory(base, made, env, Path(tmp), bomb)}
            return rows, training, refused
        finally:
            server.terminate()
            server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--setups", default="embedded,production")
    opts = parser.parse_args()
    rows, trainings, bombs = [], [], []
    with tempfile.TemporaryDirectory(prefix="trackers-bomb-") as tmp:
        bomb = zip_bomb(Path(tmp) / "bomb.zip")
        for setup in opts.setups.split(","):
            labeling_rows, training, refused = bench_setup(setup, opts.seconds, bomb)
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
        f"{'setup':<10} {'labelers':>8} {'trackers':>8} {'answers/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
        f"{'answers':>7} {'stored':>6} {'lost':>4} {'doubled':>7} {'rounds':>6} {'trained':>7} {'waiting':>7}"
    )
    for r in rows:
        print(
            f"{r['setup']:<10} {r['labelers']:>8} {r['trackers']:>8} {r['answers_per_s']:>9} {r['p50_ms']:>7} "
            f"{r['p99_ms']:>7} {r['errors']:>6} {r['answers']:>7} {r['stored']:>6} {r['lost']:>4} "
            f"{r['duplicated'] + r['double_presses_stored_twice']:>7} {r['rounds_ended']:>6} {r['trainings']:>7} "
            f"{r['waiting_share']:>7.0%}"
        )
    print(
        f"\n{'setup':<10} {'training idle s':>15} {'during a 6,000-row import s':>28} {'ratio':>6}  import job"
    )
    for t in trainings:
        idle, busy = t["idle_median_s"], t["during_import_median_s"]
        ratio = round(busy / idle, 2) if idle and busy else None
        print(f"{t['setup']:<10} {idle!s:>15} {busy!s:>28} {ratio!s:>6}  {t['embedding_after']}")
    print(f"\n{'setup':<10} {'zip bomb':>18} {'worker idle MB':>14} {'peak MB':>8} {'growth MB':>9}  job")
    for b in bombs:
        size = f"{b['bomb_bytes'] / 1e6:.1f} MB -> {b['expands_to_bytes'] / 1e9:.1f} GB"
        print(
            f"{b['setup']:<10} {size:>18} {b['worker_idle_mb']:>14} {b['worker_peak_mb']:>8} "
            f"{b['growth_mb']:>9}  {b['job_state']}: {b['message']}"
        )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
