"""Two suites at once on one PostgreSQL and one Redis: neither drops, drains nor deadlocks the other."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from django.conf import settings

from tests.conftest import REPO

pytestmark = pytest.mark.real_worker

NESTED = "TESTS_SIDE_BY_SIDE_NESTED"
# A real worker on Redis and PostgreSQL, and an ordinary database test.
SELECTION = [
    "tests/test_worker.py::test_worker_imports_embeds_and_indexes_a_file",
    "tests/test_access.py::test_home_lists_only_my_workspaces",
]


def test_two_suites_on_one_machine_both_pass():
    if os.environ.get(NESTED):
        pytest.skip("already inside a side-by-side run")
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql" or not (
        settings.CELERY_BROKER_URL.startswith("redis://")
    ):
        pytest.skip("needs DATABASE_URL on PostgreSQL and REDIS_URL (make test sets them)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env[NESTED] = "1"
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SELECTION]
    runs = [
        subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = []
    for run in runs:
        try:
            out, _ = run.communicate(timeout=150)
        except subprocess.TimeoutExpired:
            for other in runs:  # Ctrl-C, so each run's finally blocks stop the workers it started
                other.send_signal(signal.SIGINT)
            for other in runs:
                try:
                    other.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    other.kill()
            raise
        outputs.append((run.returncode, out))
    for returncode, out in outputs:
        assert returncode == 0, out
        assert f"{len(SELECTION)} passed" in out, out
