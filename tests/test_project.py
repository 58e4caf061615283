"""Project-level checks: production settings, the embedded defaults of `make run`, the demo corpus."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from trackers.demo import CONCEPTS, demo_zip, generate_calls
from trackers.importing import parse_file


def run_manage(*args: str, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"manage.py {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def clean_env(**overrides: str) -> dict[str, str]:
    drop = {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"}
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in drop and not k.startswith(("PYTEST", "TRACKERS_", "DJANGO_"))
    }
    return {**env, "HF_HUB_OFFLINE": "1", **overrides}


def test_production_settings_pass_the_deploy_check(tmp_path):
    import secrets

    env = clean_env(
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_ALLOWED_HOSTS="trackers.example.com",
        TRACKERS_DATA_DIR=str(tmp_path),
    )
    proc = run_manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert "no issues" in proc.stdout


def test_without_a_secret_key_one_is_generated_once_and_kept(tmp_path):
    env = clean_env(TRACKERS_DATA_DIR=str(tmp_path))
    show = "from django.conf import settings; print(settings.SECRET_KEY, settings.DEBUG)"
    first = run_manage("shell", "-c", show, env=env).stdout.splitlines()[-1].split()
    again = run_manage("shell", "-c", show, env=env).stdout.splitlines()[-1].split()
    assert first == again and len(first[0]) >= 64 and first[1] == "False"  # DEBUG is off by default
    key = tmp_path / "secret-key"
    assert key.read_text().strip() == first[0] and oct(key.stat().st_mode & 0o777) == "0o600"


def test_a_short_secret_key_is_refused(tmp_path):
    env = clean_env(DJANGO_SECRET_KEY="short", TRACKERS_DATA_DIR=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode != 0 and "at least 50 characters" in proc.stderr


def test_the_settings_make_run_uses_pass_the_deploy_check(tmp_path):
    """`make run`: no DJANGO_* variables, plain HTTP on loopback (TRACKERS_LOCAL_HTTP=1)."""
    env = clean_env(TRACKERS_DATA_DIR=str(tmp_path), TRACKERS_LOCAL_HTTP="1")
    proc = run_manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert "no issues" in proc.stdout
    settings_shown = run_manage(
        "shell",
        "-c",
        "from django.conf import settings as s; print(s.DEBUG, s.SILENCED_SYSTEM_CHECKS)",
        env=env,
    ).stdout.splitlines()[-1]
    # only the four HTTPS-only checks are silenced, and only for loopback HTTP
    assert (
        settings_shown.strip() == "False ['security.W004', 'security.W008', 'security.W012', 'security.W016']"
    )


@pytest.mark.parametrize("docs", ["/api/docs", "/api/v1/docs"])
def test_api_docs_work_offline(client, docs):
    html = client.get(docs).content.decode()
    assert (
        "/static/ninja/swagger-ui-bundle" in html
        and "cdn" not in html.lower()
        and "http" not in html.split("<body")[1]
    )


def test_env_example_lists_every_variable_settings_read():
    import re

    source = (REPO / "config" / "settings.py").read_text()
    read = set(re.findall(r'env_(?:bool|int|list)\("([A-Z_]+)"', source)) | set(
        re.findall(r'os\.environ\.get\("([A-Z_]+)"', source)
    )
    listed = set(re.findall(r"^([A-Z_]+)=", (REPO / ".env.example").read_text(), re.M))
    assert read and read == listed


def test_demo_corpus_is_deterministic_and_imports_cleanly():
    calls = generate_calls(150)
    assert calls == generate_calls(150) and len(calls) == 150
    result = parse_file("demo.zip", demo_zip(150))
    assert result.errors == [] and len(result.documents) == 150
    texts = {s.text for d in result.documents for s in d.segments}
    speakers = {s.speaker for d in result.documents for s in d.segments}
    assert len(speakers) >= 10
    # every concept recurs across many calls
    for concept, templates in CONCEPTS.items():
        stems = [t.split("{")[0][1:18] for t in templates if not t.startswith("{")]
        hits = sum(1 for d in result.documents if any(stem in s.text for s in d.segments for stem in stems))
        assert hits >= 8, (concept, hits)
    assert len(texts) >= 600
