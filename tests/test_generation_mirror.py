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
    mirror.bump()
"""


@pytest.fixture
def mirrored(settings, tmp_path):
    settings.GENERATION_FILE = str(tmp_path / "access-generation")
    return Path(settings.GENERATION_FILE)


def test_a_committed_bump_moves_the_mirror_and_a_rolled_back_one_does_not(
    mirrored, django_capture_on_commit_callbacks
):
    before = generation.current()
    with django_capture_on_commit_callbacks(execute=False):
        generation.bump()  # the test's transaction is never committed: the mirror must not move
    assert generation._mirror().read() == before[0]
    with django_capture_on_commit_callbacks(execute=True):
        generation.bump()
    after = generation.current()
    assert after[0] == before[0] + 1 and after != before


def test_moves_by_other_processes_are_seen_at_once_and_none_is_lost(mirrored):
    mine = generation.Mirror(mirrored)
    start = mine.read()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    procs = [
        subprocess.Popen([sys.executable, "-c", BUMPS, str(mirrored), "300"], cwd=REPO, env=env)
        for _ in range(3)
    ]
    for _ in range(200):
        mine.bump()
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    assert mine.read() == start + 3 * 300 + 200


def test_a_change_of_the_row_alone_is_seen_after_the_recheck(mirrored, monkeypatch):
    before = generation.current()
    AccessGeneration.objects.filter(pk=generation.ROW).update(value=before[1] + 5)  # not through bump
    assert generation.current() == before  # within the recheck interval the mirror alone decides
    monkeypatch.setattr(generation, "MIRROR_RECHECK_S", 0.0)
    assert generation.current() == (before[0], before[1] + 5)


def test_without_a_mirror_every_read_queries_the_row(settings):
    settings.GENERATION_FILE = ""
    before = generation.current()
    AccessGeneration.objects.filter(pk=generation.ROW).update(value=before[1] + 1)
    assert generation.current() == (0, before[1] + 1)
