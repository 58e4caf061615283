"""Backup and restore, on both setups: an install with a trained, live, alerting tracker is backed up
while it serves, restored into another, empty install (other folders, another database), and the
restored one has the same trackers, answers and live versions, scores texts the same through the
API, and signs webhooks with the same secrets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from setups import install  # noqa: E402  (bench/setups.py: the two setups, as the benchmarks make them)

pytestmark = pytest.mark.slow

TEXTS = ["please cancel my subscription today", "the weather is lovely", "we want to end the contract"]

MAKE = r"""
import contextlib, json, sys
import django
django.setup()
from django.core.management import call_command
call_command("migrate", "--noinput", verbosity=0)
from django.contrib.auth.models import User
from serving.keys import services as keys
from serving.webhooks import services as webhooks
from tests.test_game import cancel_tracker, corpus
from tests.test_versions import play
from trackers import imports, services
from trackers.access import Scope

owner = User.objects.create_user("olivia", password="a long pass phrase 9")
ws = services.create_workspace(name="Acme", owner=owner)
ds = services.create_dataset(workspace=ws, name="Calls")
imports.start_import(dataset=ds, user=owner, filename="calls.csv", data=corpus())
ds.refresh_from_db()
tracker = cancel_tracker(ws, owner, ds)
play(tracker, owner, lambda execute: contextlib.nullcontext())
_, raw = keys.issue_key(Scope.of_user(owner), ws, name="ci", role="viewer")
endpoint, secret = webhooks.create_endpoint(tracker=tracker, url="https://8.8.8.8/hook", user=owner)
print(json.dumps({"key": raw, "tracker": str(tracker.code), "endpoint": str(endpoint.code), "secret": secret}))
"""

READ = r"""
import json, sys
import django
django.setup()
from django.test import Client
from labeling.models import Annotation
from serving.models import ModelVersion, WebhookEndpoint
from serving.webhooks import outbound, services as webhooks
from trackers.models import Tracker
made = json.loads(sys.argv[1])
response = Client(HTTP_HOST="localhost").post(
    f"/api/v1/trackers/{made['tracker']}/predict", {"texts": json.loads(sys.argv[2])},
    content_type="application/json", headers={"Authorization": f"Bearer {made['key']}"},
)
assert response.status_code == 200, response.content
endpoint = WebhookEndpoint.objects.get(code=made["endpoint"])
from datetime import datetime, timezone
at = datetime(2026, 12, 1, tzinfo=timezone.utc)  # a fixed moment: the same signature if the same secret
print(json.dumps({
    "trackers": list(Tracker.objects.values_list("name", flat=True)),
    "answers": Annotation.objects.count(),
    "live": list(ModelVersion.objects.filter(is_live=True).values_list("tracker__name", "number")),
    "scores": [r["score"] for r in response.json()["results"]],
    "matches": [r["match"] for r in response.json()["results"]],
    "signature": outbound.signed_headers("msg_1", b'{"a": 1}', webhooks.signing_secrets(endpoint, at), at),
}))
"""


def _python(env: dict[str, str], code: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env={**env, "CELERY_TASK_ALWAYS_EAGER": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.mark.parametrize("setup", ["embedded", "production"])
def test_a_backup_restored_into_an_empty_install_serves_and_signs_the_same(setup, tmp_path):
    with install(setup, tmp_path / "a", "backup") as first:
        made = _python(first, MAKE)
        before = _python(first, READ, json.dumps(made), json.dumps(TEXTS))
        archive = tmp_path / "install.tar.gz"
        done = _manage(first, "backup", "--output", str(archive))
        assert done.returncode == 0, done.stderr
        assert archive.is_file() and "wrote" in done.stdout
    with install(setup, tmp_path / "b", "restore") as second:
        done = _manage(second, "restore", str(archive))
        assert done.returncode == 0, done.stderr
        after = _python(second, READ, json.dumps(made), json.dumps(TEXTS))
        again = _manage(second, "restore", str(archive))  # never into an install that has data
        assert again.returncode != 0 and "empty install" in again.stderr
    assert before["trackers"] == after["trackers"] == ["Wants to cancel"]
    assert before["answers"] == after["answers"] > 0 and before["live"] == after["live"]
    assert after["scores"] == before["scores"] and after["matches"] == before["matches"]
    assert after["signature"] == before["signature"]
    assert not list((tmp_path / "b").rglob("*.part"))


def test_a_damaged_archive_is_refused_before_anything_is_loaded(tmp_path):
    with install("embedded", tmp_path / "a", "backup") as first:
        _python(first, MAKE)
        archive = tmp_path / "install.tar.gz"
        assert _manage(first, "backup", "--output", str(archive)).returncode == 0
    import tarfile

    damaged = tmp_path / "damaged.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(damaged, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            if member.name.startswith("database/"):
                data = data[:-10] + b"0123456789"
                member.size = len(data)
            import io

            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    with install("embedded", tmp_path / "b", "restore") as second:
        done = _manage(second, "restore", str(damaged))
        assert done.returncode != 0 and "checksum differs" in done.stderr
        assert not (Path(second["TRACKERS_DATA_DIR"]) / "artifacts" / "trackers").exists()
