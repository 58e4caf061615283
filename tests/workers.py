"""Start and stop real Celery worker processes for tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def worker_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings", "HF_HUB_OFFLINE": "1"})
    env.update(overrides)
    return env


def start_worker(
    env: dict[str, str], log: Path, *, beat: bool = False, queues: str = "interactive,bulk"
) -> subprocess.Popen:
    args = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "--loglevel=INFO",
        "--concurrency=1",
        "--pool=prefork",
        "--without-gossip",
        "--without-mingle",
        "-n",
        f"test-{os.getpid()}-{time.time_ns()}@%h",
        "-Q",
        queues,
    ]
    if beat:
        args += ["--beat", f"--schedule={log.with_suffix('.beat')}"]
    return subprocess.Popen(
        args, cwd=REPO, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True
    )


def stop_worker(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def wait_for(predicate, timeout: float, what: str, log: Path | None = None, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    tail = log.read_text()[-4000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n--- worker log ---\n{tail}")
