"""The access generation's shared-memory mirror (one host): a committed change is seen by every
process at its next read, no two moves count as one, and the row still decides within a second."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trackers import generation
from trackers.models import AccessGeneration

pytestmark = pytest.mark.django_db
REPO = Path(__file__).resolve().parent.parent

BUMPS = """
import sys, django
django.setup()
from pathlib import Path
from trackers.generation import Mirror
mirror = Mirror(Path(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    mirror.bump(7)
"""


@pytest.fixture
def mirrored(settings, tmp_path):
    settings.GENERATION_FILE = str(tmp_path / "access-generation")
    return Path(settings.GENERATION_FILE)


WS = 7  # a workspace's pk (its counter need not exist before it first moves)


def test_a_committed_bump_moves_the_mirror_and_a_rolled_back_one_does_not(
    mirrored, django_capture_on_commit_callbacks
):
    before = generation.current(WS)
    with django_capture_on_commit_callbacks(execute=False):
        generation.bump(WS)  # the test's transaction is never committed: the mirror must not move
    assert generation._mirror().read((generation.GLOBAL, WS)) == before[:2]
    with django_capture_on_commit_callbacks(execute=True):
        generation.bump(WS)
    after = generation.current(WS)
    assert after[:2] == (before[0], before[1] + 1)  # the workspace's slot; the global one stays
    assert AccessGeneration.objects.get(scope=WS).value == 2  # the row counts both (one transaction)


def test_moves_by_other_processes_are_seen_at_once_and_none_is_lost(mirrored):
    mine = generation.Mirror(mirrored)
    (start,) = mine.read((WS,))
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    procs = [
        subprocess.Popen([sys.executable, "-c", BUMPS, str(mirrored), "300"], cwd=REPO, env=env)
        for _ in range(3)
    ]
    for _ in range(200):
        mine.bump(WS)
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    assert mine.read((WS,)) == (start + 3 * 300 + 200,)


def test_a_change_of_the_row_alone_is_seen_after_the_recheck(mirrored, monkeypatch):
    generation.bump(WS)
    before = generation.current(WS)
    AccessGeneration.objects.filter(scope=WS).update(value=before[3] + 5)  # not through bump
    assert generation.current(WS) == before  # within the recheck interval the mirror alone decides
    monkeypatch.setattr(generation, "MIRROR_RECHECK_S", 0.0)
    assert generation.current(WS) == (*before[:3], before[3] + 5)


def test_without_a_mirror_every_read_queries_the_rows(settings):
    settings.GENERATION_FILE = ""
    generation.bump(WS)
    before = generation.current(WS)
    AccessGeneration.objects.filter(scope=WS).update(value=before[1] + 1)
    assert generation.current(WS) == (before[0], before[1] + 1)
    assert generation.current() == before[:1]  # the global counter alone


# --- Redis: the mirror of installs whose processes run on several hosts ---------------------------------

REDIS_BUMPS = """
import sys, django
django.setup()
from trackers.generation import RedisMirror
mirror = RedisMirror(sys.argv[1])
for _ in range(int(sys.argv[2])):
    mirror.bump(7)
"""


@pytest.fixture
def in_redis(settings):
    settings.GENERATION_FILE = ""
    settings.GENERATION_REDIS = True
    generation._mirrors.clear()
    yield generation._mirror()
    generation._mirrors.clear()


def test_without_a_file_the_mirror_is_redis_and_only_a_committed_bump_moves_it(
    in_redis, django_capture_on_commit_callbacks
):
    assert isinstance(in_redis, generation.RedisMirror)
    before = generation.current(WS)
    with django_capture_on_commit_callbacks(execute=False):
        generation.bump(WS)
    assert in_redis.read((generation.GLOBAL, WS)) == before[:2]
    with django_capture_on_commit_callbacks(execute=True):
        generation.bump(WS)
    assert generation.current(WS)[:2] == (before[0], before[1] + 1)


def test_redis_moves_by_other_processes_are_seen_at_once_and_none_is_lost(in_redis, settings):
    (start,) = in_redis.read((WS,))
    prefix = settings.CACHES["default"].get("KEY_PREFIX", "")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    procs = [
        subprocess.Popen([sys.executable, "-c", REDIS_BUMPS, prefix, "200"], cwd=REPO, env=env)
        for _ in range(3)
    ]
    for _ in range(100):
        in_redis.bump(WS)
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    assert in_redis.read((WS,)) == (start + 3 * 200 + 100,)


def test_when_redis_does_not_answer_the_rows_decide_and_a_commit_still_succeeds(
    in_redis, settings, caplog, django_capture_on_commit_callbacks
):
    import logging

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "unix:///nonexistent/redis.sock",
            "KEY_PREFIX": settings.CACHES["default"].get("KEY_PREFIX", ""),
        }
    }
    generation._said_at = -60.0
    with caplog.at_level(logging.WARNING):
        before = generation.current(WS)
        with django_capture_on_commit_callbacks(execute=True):
            generation.bump(WS)  # its mirror move fails, its row moves
        after = generation.current(WS)
    assert len(before) == 2 and after == (before[0], before[1] + 1)  # the rows alone
    assert "access generations are read from the database: Redis does not answer" in caplog.text
