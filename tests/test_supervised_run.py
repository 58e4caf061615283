"""`make run` as a user starts it (``python -m config.run``), on the embedded defaults: SQLite and the
embedded Redis, every process supervised. A killed worker comes back and loses no delivery, a process
that keeps crashing stops no other, the rate limit is one counter in Redis, queued work is on disk,
and Ctrl-C stops everything within ten seconds."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import xmlrpc.client
from pathlib import Path

import pytest
import redis
import requests
from django.conf import settings

from config.run import redis_argv
from config.settings import unix_socket
from tests.conftest import REPO
from tests.receiver import receiving
from tests.test_project import clean_env, run_manage
from tests.workers import wait_for

pytestmark = pytest.mark.real_worker

APP = ("web", "worker-interactive", "worker-bulk", "worker-webhooks")
API_RATE = 100  # /api/ requests per key an hour in this run (the shared-counter check below)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Run:
    """A running `python -m config.run` in a folder of its own."""

    def __init__(self, base: Path):
        self.data = base / "var"
        self.port = _free_port()
        self.out = base / "run.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = clean_env(
            TRACKERS_DATA_DIR=str(self.data),
            TRACKERS_ENCODER_DIR=str(settings.ENCODER_DIR),
            TRACKERS_DEMO_PASSWORD="demo-pass-123",
            TRACKERS_LOCAL_HTTP="1",
            TRACKERS_WEBHOOK_ALLOW_PRIVATE_TARGETS="1",  # the receiver listens on loopback
            TRACKERS_WEBHOOK_DISPATCH_SECONDS="1",
            TRACKERS_WEBHOOK_STALE_SECONDS="5",
            TRACKERS_WEBHOOK_JITTER="0",
            TRACKERS_JOB_STALE_SECONDS="20",
            TRACKERS_API_RATE=f"{API_RATE}/h",  # an hour's window: the check never straddles two
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "config.run", "--port", str(self.port), "--web-workers", "2"],
            cwd=REPO,
            env=self.env,
            stdout=open(self.out, "ab"),  # noqa: SIM115 (the child keeps it)
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C is sent to the launcher alone, as a terminal would
        )
        wait_for(lambda: "Trackers is running at" in self.out.read_text(), 300, "make run to start", self.out)
        wait_for(self.healthy, 60, "the web server", self.out)

    def healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/api/v1/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def control(self):
        from supervisor.xmlrpc import SupervisorTransport

        sock = unix_socket(self.data, "supervisor.sock")
        transport = SupervisorTransport(None, None, f"unix://{sock}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def processes(self) -> dict[str, tuple[str, int]]:
        return {p["name"]: (p["statename"], p["pid"]) for p in self.control().getAllProcessInfo()}

    def manage_json(self, code: str):
        return json.loads(run_manage("shell", "-c", code, env=self.env).stdout.strip().splitlines()[-1])

    def stop(self, sig: int = signal.SIGINT) -> float:
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        return time.monotonic() - started


@contextlib.contextmanager
def running(base: Path):
    """A started Run in ``base``, stopped afterwards (and its supervisor, if its launcher died)."""
    r = Run(base)
    r.start()
    try:
        yield r
    finally:
        if r.proc is not None and r.proc.poll() is None:
            r.stop()
            with contextlib.suppress(OSError, xmlrpc.client.Error):
                r.control().shutdown()  # a supervisor left behind by a launcher that died


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    with running(tmp_path_factory.mktemp("make-run")) as r:
        yield r


@pytest.fixture(scope="module")
def api(run):
    """Headers with a key of the demo admin, the demo workspace's code and its dataset's."""
    raw = run.manage_json(
        "import json; from django.contrib.auth.models import User; from serving.models import ApiKey;"
        "from trackers.models import Workspace; u = User.objects.get(username='admin');"
        "w = Workspace.objects.get(); print(json.dumps([ApiKey.issue(workspace=w, name='t', created_by=u,"
        " role='owner')[1], str(w.code), str(w.datasets.get().code)]))"
    )
    return {"Authorization": f"Bearer {raw[0]}"}, raw[1], raw[2]


def test_every_process_runs_supervised_on_the_embedded_redis_and_the_demo_gets_indexed(run, api):
    # What the start prints: a line per preparation step, then the banner with the URLs; no log lines.
    printed = run.out.read_text()
    before = printed[: printed.index("Trackers is running at")].strip().splitlines()
    assert len(before) <= 12 and sum(line.strip().startswith("preparing") for line in before) == 4, before
    assert not any(
        line.lstrip().startswith("{") or " INFO " in line or " CRIT " in line for line in before
    ), before
    assert "/admin/" in printed and "/api-reference/" in printed and "make stop" in printed
    procs = run.processes()
    assert set(procs) == {"redis", *APP} and all(state == "RUNNING" for state, _ in procs.values()), procs
    sock = unix_socket(run.data, "redis.sock")
    assert redis.Redis(unix_socket_path=str(sock)).ping()
    assert (run.data / "redis" / "appendonly.aof").exists()  # queued work is written to disk
    for worker in ("worker-interactive", "worker-bulk", "worker-webhooks"):
        assert f"redis+socket://{sock}" in (run.data / "log" / f"{worker}.log").read_text()
    headers, _, dataset = api

    def indexed():
        body = requests.get(f"{run.url}/api/datasets/{dataset}", headers=headers, timeout=10).json()
        # every distinct text of the demo's calls has one vector, and all of them are in the index
        done = body["index_kind"] == "flat" and body["index_size"] == body["vectors"] > 500
        return body if done else None

    done = wait_for(indexed, 240, "the demo corpus to be imported, embedded and indexed", run.out, interval=3)
    assert done["documents"] == 150
    again = run_manage("setup_demo", env=run.env).stdout
    assert "queued import" not in again and "log in as: admin  password: demo-pass-123" in again


def test_the_api_rate_is_one_counter_in_redis_across_web_processes(run, api):
    headers, workspace, _ = api
    _, raw = run.manage_json(  # a key of its own: the other tests' calls do not count against it
        "import json; from django.contrib.auth.models import User; from serving.models import ApiKey;"
        "from trackers.models import Workspace; print(json.dumps([0, ApiKey.issue(workspace="
        "Workspace.objects.get(), name='rate', created_by=User.objects.get(username='admin'))[1]]))"
    )
    mine = {"Authorization": f"Bearer {raw}"}
    codes: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()

    def calls(n: int) -> None:
        session = requests.Session()
        for _ in range(n):
            status = session.get(f"{run.url}/api/workspaces", headers=mine, timeout=10).status_code
            with lock:
                codes[status] += 1

    threads = [threading.Thread(target=calls, args=(API_RATE // 4 + 3,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Two web processes, four connections, one window: exactly the rate passes, whichever process
    # answered each call; the count is one number in Redis, which a request in flight when the window
    # runs out asks once more (at most one per connection) before its process refuses the rest of the
    # window by itself.
    assert codes == {200: API_RATE, 429: 12}, codes
    store = redis.Redis(unix_socket_path=str(unix_socket(run.data, "redis.sock")))
    counters = [int(store.get(k) or 0) for k in store.scan_iter(match="*rate:api:key:*")]
    assert any(API_RATE < n <= API_RATE + len(threads) for n in counters), counters


def test_a_killed_worker_is_back_within_10s_and_200_deliveries_arrive_once_each(run, api):
    headers, workspace, dataset = api
    tracker = requests.post(
        f"{run.url}/api/workspaces/{workspace}/trackers",
        json={
            "name": "Mentions a competitor",
            "datasets": [dataset],
            "seeds": ["we use Salesforce now", "HubSpot quoted us less", "we are looking at Zendesk"],
        },
        headers=headers,
        timeout=30,
    )
    assert tracker.status_code == 201, tracker.text
    with receiving() as receiver:
        endpoint = requests.post(
            f"{run.url}/api/v1/trackers/{tracker.json()['code']}/webhooks",
            json={"url": receiver.url},
            headers=headers,
            timeout=30,
        )
        assert endpoint.status_code == 201, endpoint.text
        code = endpoint.json()["code"]
        sent: list[str] = []

        def burst() -> None:
            session = requests.Session()
            for _ in range(200):
                r = session.post(f"{run.url}/api/v1/webhooks/{code}/test", headers=headers, timeout=30)
                assert r.status_code == 202, r.text
                sent.append(r.json()["webhook_id"])

        poster = threading.Thread(target=burst)
        poster.start()
        wait_for(lambda: len(receiver.received) >= 40, 60, "the first deliveries", run.out)
        _, pid = run.processes()["worker-webhooks"]
        at_kill = (len(sent), len(receiver.received))
        os.kill(pid, signal.SIGKILL)  # the main process, mid-burst: its threads die with it
        killed = time.monotonic()
        wait_for(
            lambda: (
                run.processes()["worker-webhooks"][0] == "RUNNING"
                and run.processes()["worker-webhooks"][1] != pid
            ),
            10,
            "the webhooks worker to be started again",
            run.data / "log" / "worker-webhooks.log",
        )
        back = time.monotonic() - killed
        poster.join(timeout=120)
        assert len(sent) == 200
        wait_for(lambda: set(sent) <= set(receiver.ids()), 120, "every delivery to arrive", run.out)
        got = collections.Counter(receiver.ids())
    assert back < 10
    assert set(got) == set(sent)  # every one of the 200 arrived; nothing else did
    # An event arrives twice only if the worker died during its attempt (the receiver had it, the
    # worker had not yet written that down): those, and only those, were claimed twice. Receivers
    # dedupe such a repeat by its webhook-id, which stays the same (Standard Webhooks).
    claims = run.manage_json(
        "import json; from serving.models import WebhookDelivery as D;"
        f"print(json.dumps({{d.event.webhook_id: [d.state, d.attempts] for d in D.objects.filter(endpoint__code='{code}')}}))"
    )
    assert all(state == "succeeded" for state, _ in claims.values())
    twice = {i for i, n in got.items() if n > 1}
    assert twice <= {i for i, (_, n) in claims.items() if n > 1}, (twice, claims)
    assert len(twice) <= 8  # at most the worker's threads were mid-attempt
    print(f"killed after {at_kill[0]} sent, {at_kill[1]} received; back in {back:.1f} s; {len(twice)} twice")


def test_a_crash_looping_process_stops_no_other_and_comes_back_once_it_can(run):
    before = run.processes()
    run.control().stopProcess("app:web")
    with socket.socket() as squatter:  # the web server cannot bind its port: it crashes at every start
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", run.port))
        squatter.listen()
        run.control().startProcess("app:web", False)
        wait_for(
            lambda: run.processes()["web"][0] == "FATAL", 60, "the supervisor to give up on web", run.out
        )
        during = run.processes()
    for name in ("redis", "worker-interactive", "worker-bulk", "worker-webhooks"):
        assert during[name] == before[name] == ("RUNNING", before[name][1])  # untouched, same process
    run.control().startProcess("app:web", True)
    wait_for(run.healthy, 30, "the web server after its port was freed", run.out)


def test_ctrl_c_stops_everything_within_10_seconds_and_queued_work_stays_on_disk(run, api):
    headers, _, _ = api
    run.control().stopProcess("app:worker-webhooks")  # what is queued now waits in Redis
    endpoint = run.manage_json(
        "import json; from serving.models import WebhookEndpoint; print(json.dumps(str(WebhookEndpoint.objects.get().code)))"
    )
    queued = requests.post(f"{run.url}/api/v1/webhooks/{endpoint}/test", headers=headers, timeout=30)
    assert queued.status_code == 202
    pids = [pid for _, pid in run.processes().values()]
    took = run.stop(signal.SIGINT)
    assert took < 10 and run.proc.returncode == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    # The queue is in Redis's append-only file: a Redis started on the same folder has the message.
    sock = run.data / "check.sock"
    check = subprocess.Popen(redis_argv(sock, run.data / "redis"), stdout=subprocess.DEVNULL)
    try:
        store = redis.Redis(unix_socket_path=str(sock))

        def answers() -> bool:
            try:
                return bool(store.ping())
            except redis.ConnectionError:
                return False

        wait_for(answers, 10, "a Redis on the run's files")
        messages = [json.loads(m) for m in store.lrange("webhooks", 0, -1)]
        assert any(m["headers"]["task"] == "serving.tasks.deliver_webhook" for m in messages), messages
    finally:
        check.terminate()
        check.wait()


def test_make_run_prints_the_steps_and_the_banner_and_ctrl_c_ends_it_quietly(tmp_path):
    """`make run` as typed: Ctrl-C reaches make and the launcher together (one process group, as a
    terminal sends it); what follows the banner is one line, with no error of make's or a worker's."""
    out = tmp_path / "make-run.log"
    port = _free_port()
    env = clean_env(
        TRACKERS_DATA_DIR=str(tmp_path / "var"),
        TRACKERS_ENCODER_DIR=str(settings.ENCODER_DIR),
        TRACKERS_DEMO_PASSWORD="demo-pass-123",
    )
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"PORT={port}", "WEB_WORKERS=1"],
        cwd=REPO,
        env=env,
        stdout=open(out, "ab"),  # noqa: SIM115 (the child keeps it)
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: "Ctrl-C stops everything" in out.read_text(), 300, "make run to start", out)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    after = out.read_text().split("Ctrl-C stops everything", 1)[1].splitlines()[1:]
    assert [line for line in after if line.strip()] == ["stopping Trackers…"], after
