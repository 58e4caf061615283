"""The embedded default (SQLite) serves several labelers at once without errors or lost answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
@pytest.mark.parametrize("attempt", [1, 2])
def test_four_labelers_at_once_on_sqlite_lose_nothing_and_fail_nothing(tmp_path, attempt):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    done = subprocess.run(
        [sys.executable, "-m", "tests.sqlite_labelers", str(tmp_path), "4"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["journal_mode"] == "wal"
    assert result["errors"] == []
    # every card of the round answered exactly once, double presses and undos included
    assert (
        result["answered_cards"] == result["cards"] == result["answers"] == result["cards_with_answers"] == 25
    )
    assert result["labelers_who_answered"] == 4
