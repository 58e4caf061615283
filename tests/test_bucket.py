"""Artifacts shared through an S3-compatible bucket (moto's server, started here): what one host
writes, another with an empty artifact root fetches, checks and serves."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pytest
from django.test import TestCase

from tests.conftest import REPO
from tests.test_game import cancel_tracker, corpus
from tests.test_versions import oracle, play, predict
from tests.workers import start_worker, stop_worker, wait_for
from trackers import bucket

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """moto's S3-compatible server on a port of its own, for this module."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=open(log, "ab"),  # noqa: SIM115 (held while the server runs)
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.terminate()
        pytest.fail(f"moto's server did not start: {log.read_text()[-2000:]}")
    yield endpoint
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def shared(s3_server, settings, monkeypatch):
    """A fresh bucket, and this process configured to share its artifacts through it."""
    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    name = f"trackers-{time.time_ns()}"
    boto3.client("s3", endpoint_url=s3_server, **_creds()).create_bucket(Bucket=name)
    url = f"s3://{name}/install?endpoint_url={s3_server}&region=us-east-1"
    settings.STORAGE_URL = url
    bucket._verified.clear()
    return url


def _creds() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": "us-east-1",
    }


def test_the_url_says_what_is_wrong(settings):
    from django.core.exceptions import ImproperlyConfigured

    assert bucket.parse("s3://b/p/q?endpoint_url=http://h:1&region=eu") == {
        "bucket": "b",
        "prefix": "p/q",
        "endpoint_url": "http://h:1",
        "region": "eu",
    }
    with pytest.raises(ImproperlyConfigured, match="s3://<bucket>"):
        bucket.parse("https://b/p")
    with pytest.raises(ImproperlyConfigured, match="unknown option"):
        bucket.parse("s3://b/p?endpoint=x")


def test_a_row_written_on_another_host_names_a_path_under_this_hosts_root(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "here"
    assert (
        bucket.local("/srv/there/artifacts/trackers/abc/versions/v1")
        == tmp_path / "here/trackers/abc/versions/v1"
    )
    assert (
        bucket.local(str(tmp_path / "here/datasets/x/index/i.faiss"))
        == tmp_path / "here/datasets/x/index/i.faiss"
    )
    assert bucket.local("trackers/abc/head.npz") == tmp_path / "here/trackers/abc/head.npz"


def test_what_one_host_pushes_another_fetches_checked(shared, settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "a"
    folder = tmp_path / "a" / "trackers" / "t1" / "versions" / "v1"
    folder.mkdir(parents=True)
    (folder / "head.onnx").write_bytes(b"weights" * 100)
    (folder / "manifest.json").write_text('{"version": 1}')
    assert bucket.push(folder) == 2
    settings.ARTIFACT_ROOT = tmp_path / "b"  # another host, nothing local
    bucket._verified.clear()
    here = bucket.fetched(str(folder))
    assert here == tmp_path / "b" / "trackers" / "t1" / "versions" / "v1"
    assert (here / "head.onnx").read_bytes() == b"weights" * 100
    assert not list(here.glob(".fetch-*"))
    # A damaged copy in the bucket is refused, and nothing half-written is left in place.
    s3 = boto3.client("s3", endpoint_url=bucket.parse(shared)["endpoint_url"], **_creds())
    conf = bucket.parse(shared)
    s3.put_object(
        Bucket=conf["bucket"],
        Key=f"{conf['prefix']}/trackers/t1/versions/v1/head.onnx",
        Body=b"tampered",
        Metadata={"sha256": "0" * 64},
    )
    shutil.rmtree(tmp_path / "b")
    bucket._verified.clear()
    with pytest.raises(OSError, match="does not match its SHA-256"):
        bucket.fetched(str(folder))
    assert not (tmp_path / "b" / "trackers" / "t1" / "versions" / "v1" / "head.onnx").exists()
    # A deleted artifact leaves the bucket too: nothing is fetched any more.
    assert bucket.remove(folder) == 2
    assert not (bucket.fetched(str(folder)) / "head.onnx").exists()


@pytest.mark.real_worker
@pytest.mark.django_db(transaction=True)
def test_a_version_a_worker_published_is_served_by_a_web_process_with_an_empty_artifact_root(
    shared, env, settings, dataset, workspace, owner, tmp_path
):
    from django.core.management import call_command

    from labeling.models import TrainingRun
    from serving.models import ApiKey, ModelVersion
    from trackers import imports, search

    call_command("prepare_encoder")  # a no-op once exported
    worker_env = {**env, **CREDENTIALS, "TRACKERS_STORAGE_URL": shared}
    log = tmp_path / "worker.log"
    worker = start_worker(worker_env, log)
    try:
        with TestCase.captureOnCommitCallbacks(execute=True):
            imports.start_import(dataset=dataset, user=owner, filename="msgs.csv", data=corpus())
        wait_for(lambda: dataset.__class__.objects.get(pk=dataset.pk).index_size > 0, 180, "import", log)
        dataset.refresh_from_db()
        tracker = cancel_tracker(workspace, owner, dataset)
        play(tracker, owner, TestCase.captureOnCommitCallbacks, answer=oracle)
        wait_for(
            lambda: ModelVersion.objects.filter(tracker=tracker, is_live=True).exists(), 180, "a version", log
        )
    finally:
        stop_worker(worker)
    assert TrainingRun.objects.filter(tracker=tracker, state="succeeded").exists()
    version = ModelVersion.objects.get(tracker=tracker, is_live=True)
    _, raw = ApiKey.issue(workspace=workspace, name="ci", created_by=owner)
    texts = ["please cancel my plan today", "lunch was great", "we will end the contract"]
    from django.test import Client

    here = predict(Client(), tracker, {"Authorization": f"Bearer {raw}"}, texts=texts).json()

    # A web process on another host: its artifact root is an empty folder.
    elsewhere = tmp_path / "other-host"
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "config.serve", "--port", str(port), "--workers", "1"],
        cwd=REPO,
        env={
            **worker_env,
            "TRACKERS_ARTIFACT_ROOT": str(elsewhere),
            "TRACKERS_DATA_DIR": str(tmp_path / "var2"),
        },
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "server.log", "ab"),  # noqa: SIM115 (held until the server stops)
    )
    try:
        url = f"http://127.0.0.1:{port}/api/v1/trackers/{tracker.code}/predict"
        answer = None
        for _ in range(150):
            try:
                request = urllib.request.Request(
                    url,
                    data=json.dumps({"texts": texts}).encode(),
                    headers={"Authorization": f"Bearer {raw}", "Content-Type": "application/json"},
                )
                answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
                break
            except OSError:
                time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(30)
    assert answer is not None, (tmp_path / "server.log").read_text()[-3000:]
    assert answer["version"] == version.number
    assert [r["score"] for r in answer["results"]] == [r["score"] for r in here["results"]]
    fetched = elsewhere / Path(version.artifact_dir).relative_to(settings.ARTIFACT_ROOT)
    assert (fetched / "head.onnx").is_file() and (fetched / "manifest.json").is_file()

    # Search on that host fetches the dataset's vectors and index too.
    settings.ARTIFACT_ROOT = tmp_path / "third-host"
    bucket._verified.clear()
    hits = search.search_segments(dataset, "I want to cancel", k=3)
    assert len(hits) == 3 and all("cancel" in h.segment.text for h in hits[:1])
    assert list((tmp_path / "third-host" / "datasets").rglob("*.faiss"))


@pytest.mark.django_db
def test_what_a_deleted_workspace_had_in_the_bucket_goes_with_it(
    shared, trained, workspace, owner, django_capture_on_commit_callbacks
):
    from trackers import deletion

    conf = bucket.parse(shared)
    s3 = boto3.client("s3", endpoint_url=conf["endpoint_url"], **_creds())

    def keys() -> list[str]:
        return [o["Key"] for o in s3.list_objects_v2(Bucket=conf["bucket"]).get("Contents", [])]

    held = keys()
    assert any("/versions/" in k for k in held) and any(k.endswith(".faiss") for k in held)
    assert any("/vectors/" in k for k in held) and any("/evidence-" in k for k in held)
    with django_capture_on_commit_callbacks(execute=True):
        deletion.delete(workspace, by=owner, confirm_name=workspace.name)
    assert keys() == []


def test_a_backup_on_one_host_gets_what_other_hosts_wrote(shared, settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "a"
    index = tmp_path / "a" / "datasets" / "d1" / "index" / "index-1.faiss"
    index.parent.mkdir(parents=True)
    index.write_bytes(b"faiss")
    bucket.push(index)
    settings.ARTIFACT_ROOT = tmp_path / "b"
    assert bucket.fetch_everything() == 1
    assert (tmp_path / "b" / "datasets" / "d1" / "index" / "index-1.faiss").read_bytes() == b"faiss"
    assert bucket.fetch_everything() == 0  # nothing left to fetch
