"""Promote and roll back while a real server process answers a stream of predictions: none fails.

The server is granian as `make run` starts it, on this run's PostgreSQL test database, with the
real encoder; the tracker is trained here, through the services, on the real encoder's vectors.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from django.db import connection

from tests.conftest import REPO
from tests.test_versions import real_trained_tracker
from tests.workers import worker_env

pytestmark = [pytest.mark.real_encoder, pytest.mark.django_db(transaction=True)]


def _post(url: str, key: str, body: dict | None = None) -> tuple[int, dict | None]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else b"",
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except OSError:
        return 0, None


@pytest.fixture
def server(settings, tmp_path):
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("the live server test needs DATABASE_URL pointing at PostgreSQL (make test sets it)")
    # This test's changes commit (the servers read them), so it moves the Redis mirror of the access
    # generations the servers read, as every process of an install does; without it they would see a
    # change only at their next check of the rows, up to a second later.
    settings.GENERATION_REDIS = True
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{connection.settings_dict['NAME']}"
    env = worker_env(
        DATABASE_URL=url,
        TRACKERS_ARTIFACT_ROOT=str(settings.ARTIFACT_ROOT),
        TRACKERS_MEDIA_ROOT=str(settings.MEDIA_ROOT),
        TRACKERS_ENCODER_DIR=str(settings.ENCODER_DIR),
        TRACKERS_DATA_DIR=str(tmp_path / "var"),
        TRACKERS_LOCAL_HTTP="1",
        # The request streams below run as fast as the server answers: the per-key rate is not
        # what these tests check (tests/test_rates.py and the supervised run do).
        TRACKERS_API_V1_RATE="1000000/m",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "config.serve", "--port", str(port), "--workers", "2"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "server.log", "ab"),  # noqa: SIM115 (held until the server stops)
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(f"{base}/api/v1/health", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(30)


def test_promote_and_roll_back_during_a_request_stream_fail_no_request(
    server, dataset, workspace, owner, key
):
    tracker = real_trained_tracker(dataset, workspace, owner, rounds=2)
    raw = key["Authorization"].removeprefix("Bearer ")
    predict = f"{server}/api/v1/trackers/{tracker.code}/predict"
    versions = f"{server}/api/v1/trackers/{tracker.code}/versions"
    assert _post(f"{versions}/2/promote", raw)[0] == 200
    stop = threading.Event()
    answered: list[int] = []
    failures: list[int] = []

    def stream() -> None:
        while not stop.is_set():
            status, body = _post(predict, raw, {"texts": ["please cancel my plan", "lunch was great"]})
            if status == 200 and body is not None and len(body["results"]) == 2:
                answered.append(body["version"])
            else:
                failures.append(status)

    threads = [threading.Thread(target=stream) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for number in [1, 2] * 5:  # roll back, promote, ... while the stream runs
            time.sleep(0.3)
            assert _post(f"{versions}/{number}/promote", raw)[0] == 200
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert failures == []
    assert len(answered) > 20 and set(answered) == {1, 2}, (len(answered), set(answered))
    # Every web process sees the last promotion (v2) on its next request, though it keeps lookups.
    after = [_post(predict, raw, {"texts": ["cancel it"]}) for _ in range(12)]
    assert [(status, body["version"]) for status, body in after] == [(200, 2)] * 12
    # A revoked key stops at once in every process that had it.
    from serving.models import ApiKey

    second = ApiKey.issue(workspace=workspace, name="second", created_by=owner)
    assert [_post(predict, second[1], {"texts": ["x"]})[0] for _ in range(12)] == [200] * 12
    keys = f"{server}/api/v1/workspaces/{workspace.code}/keys"
    assert _post(f"{keys}/{second[0].pk}/revoke", raw)[0] == 200
    assert [_post(predict, second[1], {"texts": ["x"]})[0] for _ in range(12)] == [401] * 12
    # A demoted maker's key is demoted with them at the next request, in every process that kept it.
    from trackers.models import Membership

    assert [_post(f"{versions}/1/promote", raw)[0] for _ in range(6)] == [200] * 6
    membership = Membership.objects.get(workspace=workspace, user=owner)
    membership.role = "viewer"
    membership.save()
    assert [_post(f"{versions}/2/promote", raw)[0] for _ in range(12)] == [403] * 12
    assert [_post(predict, raw, {"texts": ["x"]})[0] for _ in range(6)] == [200] * 6  # a viewer predicts
