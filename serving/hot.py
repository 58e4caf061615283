"""What the prediction path looks up, kept per process for as long as the access generation holds.

A request reads the generation once (``snapshot``); the keys, trackers, live versions and encoders
looked up under it are kept until it moves, which every change to them makes happen (see
``trackers.generation``). So a revoked key, a promotion or a new threshold is seen by the next
request in every process, and a request in flight keeps what it started with. Objects kept here
are shared by threads and never changed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from trackers import generation

T = TypeVar("T")
MAX_ENTRIES = 20_000  # past this, everything kept is dropped (a flood of distinct keys or trackers)

_lock = threading.Lock()
_kept: dict[Any, Any] = {}
_generation: generation.Token | None = None


class Snapshot:
    """One request's view: the generation it read, and the lookups kept under it."""

    def __init__(self, value: generation.Token, kept: dict[Any, Any]):
        self.value = value
        self._kept = kept

    def get(self, key: Any, build: Callable[[], T]) -> T:
        try:
            return self._kept[key]
        except KeyError:
            pass
        value = build()
        with _lock:
            if self._kept is _kept and len(_kept) >= MAX_ENTRIES:
                _kept.clear()
            self._kept[key] = value
        return value


def snapshot(request: Any = None) -> Snapshot:
    """The request's snapshot, read once per request (``request`` None: a fresh one)."""
    if request is not None and (held := getattr(request, "_access_snapshot", None)) is not None:
        return held
    global _kept, _generation
    value = generation.current()
    with _lock:
        if value != _generation:
            _kept, _generation = {}, value  # a new dict: requests still on the old one keep it
        snap = Snapshot(value, _kept)
    if request is not None:
        request._access_snapshot = snap
    return snap


_last: dict[Any, float] = {}


def due(key: Any, every_s: float) -> bool:
    """True at most once every ``every_s`` seconds per ``key`` in this process (a key's last-used
    write, once a minute, not a query per request)."""
    now = time.monotonic()
    with _lock:
        if now - _last.get(key, -every_s) < every_s:
            return False
        _last[key] = now
        return True


def forget() -> None:
    """Drop everything kept (tests, whose rolled-back transactions move the counter back)."""
    global _kept, _generation
    with _lock:
        _kept, _generation = {}, None
        _last.clear()
