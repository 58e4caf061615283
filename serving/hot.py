"""What the prediction path looks up, kept per process and workspace for as long as that workspace's
access generation holds.

A request reads its workspace's generation once (``snapshot``); the keys, trackers, live versions
and endpoints looked up under it are kept until it moves, which every change to them makes happen
(see ``trackers.generation``). So a revoked key, a promotion or a new threshold is seen by the next
request in every process, a request in flight keeps what it started with, and a change in one
workspace leaves what other workspaces keep alone. Objects kept here are shared by threads and never
changed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from trackers import generation

T = TypeVar("T")
MAX_ENTRIES = 20_000  # past this, what a workspace keeps is dropped (a flood of distinct keys)
MAX_WORKSPACES = 10_000  # past this, every workspace's

_lock = threading.Lock()
_kept: dict[int | None, tuple[generation.Token, dict[Any, Any]]] = {}
_workspace_of: dict[Any, int] = {}  # a key's or a tracker's workspace: it never changes


class Snapshot:
    """One request's view of one workspace: the generation it read, and the lookups kept under it."""

    def __init__(self, value: generation.Token, kept: dict[Any, Any]):
        self.value = value
        self._kept = kept

    def get(self, key: Any, build: Callable[[], T]) -> T:
        try:
            return cast(T, self._kept[key])
        except KeyError:
            pass
        value = build()
        with _lock:
            if len(self._kept) >= MAX_ENTRIES:
                self._kept.clear()
            self._kept[key] = value
        return value


def snapshot(request: Any = None, workspace_id: int | None = None) -> Snapshot:
    """The request's snapshot of ``workspace_id`` (None: of what no workspace owns), read once per
    request (``request`` None: a fresh one)."""
    held: dict[int | None, Snapshot] | None = getattr(request, "_access_snapshots", None)
    if held is not None and (snap := held.get(workspace_id)) is not None:
        return snap
    value = generation.current(workspace_id)
    with _lock:
        token, kept = _kept.get(workspace_id, (None, None))
        if token != value or kept is None:
            if len(_kept) >= MAX_WORKSPACES:
                _kept.clear()
            kept = {}  # a new dict: requests still on the old one keep it
            _kept[workspace_id] = (value, kept)
        snap = Snapshot(value, kept)
    if request is not None:
        if held is None:
            held = request._access_snapshots = {}
        held[workspace_id] = snap
    return snap


def workspace_of(key: Any, find: Callable[[], int | None]) -> int | None:
    """The workspace of something whose workspace never changes (an API key, a tracker), found once
    per process; nothing is kept for what is not found."""
    found = _workspace_of.get(key)
    if found is None:
        found = find()
        if found is not None:
            with _lock:
                if len(_workspace_of) >= MAX_ENTRIES:
                    _workspace_of.clear()
                _workspace_of[key] = found
    return found


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
    with _lock:
        _kept.clear()
        _workspace_of.clear()
        _last.clear()
