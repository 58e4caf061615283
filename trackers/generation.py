"""Access generations: counters that every change to what serving a request depends on moves, one
per workspace and one for what every workspace depends on (users).

A counter is a database row, so a web process can keep the keys, trackers and live versions of a
workspace it has looked up and still see a revocation or a promotion there on the very next
request, in every process: when the workspace's counter (or the global one) has moved, what was kept
for that workspace is dropped, and other workspaces keep theirs. Saves and deletes of the watched
models move the counter of the workspace they belong to (``watch``); code that changes them with
``QuerySet.update`` calls ``bump`` itself. A user's login (Django saves ``last_login``) moves nothing.

Reading the rows is one query per request, so a mirror of the counters is read instead, with the
rows still read once a second (``MIRROR_RECHECK_S``): a process that died between its commit and the
mirror's move, or a change made outside the app, holds things back for a second at most. ``bump``
moves the mirror once its transaction has committed.

- When every process runs on one host (always so with SQLite, whose file they all open; a
  single-host PostgreSQL install may opt in), a memory-mapped file (``settings.GENERATION_FILE``),
  one slot per workspace (workspaces share a slot past the page's slots: a move there drops a
  neighbour's lookups too, which is only slower): a read is a memory read.
- Otherwise Redis (``settings.GENERATION_REDIS``, on by default), which every host reaches: a read
  is one ``MGET``. If Redis does not answer, the rows are read instead (said once a minute).
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import struct
import threading
import time
from pathlib import Path
from typing import Any

import redis
from django.conf import settings
from django.core.cache import caches
from django.db import connection, transaction
from django.db.models import F, Model
from django.db.models.signals import m2m_changed, post_delete, post_save

from trackers.models import AccessGeneration, Tracker, Workspace

log = logging.getLogger(__name__)
GLOBAL = 0  # the counter every workspace depends on (users); a workspace's is its pk
_TABLE = AccessGeneration._meta.db_table
MIRROR_RECHECK_S = 1.0
_COUNTER = struct.Struct("<Q")
SLOTS = mmap.PAGESIZE // _COUNTER.size  # slot 0: GLOBAL; a workspace's: 1 + pk % (SLOTS - 1)

Token = tuple[int, ...]  # the mirror's counters (none without one), then the rows' values


def _scopes(workspace_id: int | None) -> tuple[int, ...]:
    return (GLOBAL,) if workspace_id is None else (GLOBAL, workspace_id)


def current(workspace_id: int | None = None) -> Token:
    """What the counters of ``workspace_id`` (and the global one) are now: equal tokens mean nothing
    watched in that workspace, nor any user, has changed in between."""
    scopes = _scopes(workspace_id)
    mirror = _mirror()
    if mirror is None:
        return _rows(scopes)
    try:
        return mirror.read(scopes) + mirror.row_values(scopes)
    except redis.RedisError as exc:
        _unreachable(exc)
        return _rows(scopes)  # a token of another length: what was kept is not trusted


def bump(workspace_id: int | None = None) -> None:
    """Move the counter of ``workspace_id`` (None: the global one); inside a transaction, with it."""
    scope = GLOBAL if workspace_id is None else workspace_id
    with transaction.atomic():
        if not AccessGeneration.objects.filter(scope=scope).update(value=F("value") + 1):
            AccessGeneration.objects.get_or_create(scope=scope)  # a concurrent creator wins: then move it
            AccessGeneration.objects.filter(scope=scope).update(value=F("value") + 1)
        mirror = _mirror()
        if mirror is not None:
            transaction.on_commit(lambda: _bump_mirror(mirror, scope))  # readers find the change committed


def _bump_mirror(mirror: Mirror | RedisMirror, scope: int) -> None:
    try:
        mirror.bump(scope)
    except redis.RedisError as exc:  # the rows have it: readers see it within MIRROR_RECHECK_S
        _unreachable(exc)


_said_at = -60.0


def _unreachable(exc: Exception) -> None:
    global _said_at
    now = time.monotonic()
    if now - _said_at >= 60:  # once a minute per process, not once per request
        _said_at = now
        log.warning("access generations are read from the database: Redis does not answer (%s)", exc)


def workspace_of(instance: Model) -> int | None:
    """The workspace a watched object belongs to (None: every workspace depends on it)."""
    if isinstance(instance, Workspace):
        return instance.pk
    workspace_id = getattr(instance, "workspace_id", None)
    if workspace_id is not None:
        return int(workspace_id)
    tracker_id = getattr(instance, "tracker_id", None)
    if tracker_id is not None:
        found = Tracker.objects.filter(pk=tracker_id).values_list("workspace_id", flat=True).first()
        return int(found) if found is not None else None
    return None


def _moved(sender: type[Model], instance: Model, update_fields: Any = None, **kwargs: Any) -> None:
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return  # a sign-in changes nothing a request is answered from
    bump(workspace_of(instance))


def watch(*models: type[Model], m2m: tuple[type[Model], ...] = ()) -> None:
    """Move the counter of their workspace on every save and delete of ``models`` and every change of
    the ``m2m`` tables (a model with no workspace moves the global counter)."""
    for model in models:
        uid = f"access-generation-{model._meta.label_lower}"
        post_save.connect(_moved, sender=model, dispatch_uid=f"{uid}-save", weak=False)
        post_delete.connect(_moved, sender=model, dispatch_uid=f"{uid}-delete", weak=False)
    for through in m2m:
        m2m_changed.connect(
            _moved, sender=through, dispatch_uid=f"access-generation-{through._meta.label_lower}", weak=False
        )


def _rows(scopes: tuple[int, ...]) -> tuple[int, ...]:
    # The driver's own cursor: Django's wrappers cost more than the query on the prediction path.
    if connection.connection is None:
        connection.ensure_connection()
    placeholders = ", ".join(["%s"] * len(scopes))
    sql = f"SELECT scope, value FROM {_TABLE} WHERE scope IN ({placeholders})"
    if connection.vendor == "sqlite":
        sql = sql.replace("%s", "?")
    with connection.wrap_database_errors:
        cursor = connection.connection.cursor()
        try:
            cursor.execute(sql, scopes)
            found = dict(cursor.fetchall())
        finally:
            cursor.close()
    return tuple(int(found.get(s, 0)) for s in scopes)


class _Rechecked:
    """A mirror's memory of the rows: read at most once every ``MIRROR_RECHECK_S`` per scope."""

    def __init__(self) -> None:
        self._row_value: dict[int, int] = {}
        self._row_read_at: dict[int, float] = {}

    def row_values(self, scopes: tuple[int, ...]) -> tuple[int, ...]:
        """The rows' values as read at most ``MIRROR_RECHECK_S`` ago."""
        now = time.monotonic()
        stale = tuple(
            s for s in scopes if now - self._row_read_at.get(s, -MIRROR_RECHECK_S) >= MIRROR_RECHECK_S
        )
        if stale:
            for s, value in zip(stale, _rows(stale), strict=True):
                self._row_value[s], self._row_read_at[s] = value, now
        return tuple(self._row_value[s] for s in scopes)


class Mirror(_Rechecked):
    """The counters in a memory-mapped file that every process of this host maps: reading one is a
    memory read; moving one takes the file's lock, so no two moves count as one."""

    def __init__(self, path: Path):
        super().__init__()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size < mmap.PAGESIZE:
            # New bytes read as zero; a second process's call finds the size and changes nothing.
            os.ftruncate(self._fd, mmap.PAGESIZE)
        self._map = mmap.mmap(self._fd, mmap.PAGESIZE)
        self._lock = threading.Lock()  # POSIX record locks exclude processes, not threads

    @staticmethod
    def slot(scope: int) -> int:
        return 0 if scope == GLOBAL else 1 + scope % (SLOTS - 1)

    def read(self, scopes: tuple[int, ...] = (GLOBAL,)) -> tuple[int, ...]:
        return tuple(_COUNTER.unpack_from(self._map, self.slot(s) * _COUNTER.size)[0] for s in scopes)

    def bump(self, scope: int = GLOBAL) -> None:
        at = self.slot(scope) * _COUNTER.size
        with self._lock:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
            try:
                _COUNTER.pack_into(self._map, at, _COUNTER.unpack_from(self._map, at)[0] + 1)
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)


class RedisMirror(_Rechecked):
    """The counters in Redis (the cache's server and key prefix), for processes on several hosts:
    reading them is one ``MGET``; ``INCR`` moves one atomically."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self._prefix = prefix

    def _keys(self, scopes: tuple[int, ...]) -> list[str]:
        return [f"{self._prefix}:generation:{s}" for s in scopes]

    @staticmethod
    def _client() -> Any:
        return caches["default"]._cache.get_client(write=True)  # type: ignore[attr-defined]

    def read(self, scopes: tuple[int, ...] = (GLOBAL,)) -> tuple[int, ...]:
        return tuple(int(v or 0) for v in self._client().mget(self._keys(scopes)))

    def bump(self, scope: int = GLOBAL) -> None:
        self._client().incr(self._keys((scope,))[0])


_mirrors: dict[str | Path, Mirror | RedisMirror] = {}
_mirrors_lock = threading.Lock()


def _mirror() -> Mirror | RedisMirror | None:
    path = settings.GENERATION_FILE
    if path:
        found = _mirrors.get(path)
        if found is None:
            with _mirrors_lock:
                found = _mirrors.get(path)
                if found is None:
                    found = _mirrors[path] = Mirror(Path(path))
        return found
    if not settings.GENERATION_REDIS:
        return None
    prefix = str(settings.CACHES["default"].get("KEY_PREFIX", ""))
    found = _mirrors.get(f"redis:{prefix}")
    if found is None:
        with _mirrors_lock:
            found = _mirrors.setdefault(f"redis:{prefix}", RedisMirror(prefix))
    return found


# A forked child (a Celery pool process, a granian worker) opens its own: a lock held by a parent's
# thread at the fork would never be released in the child.
os.register_at_fork(after_in_child=_mirrors.clear)
