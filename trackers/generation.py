"""The access generation: one counter that every change to what serving a request depends on moves.

The counter is a database row, so a web process can keep keys, trackers and live versions it has
looked up and still see a revocation or a promotion on the very next request, in every process:
when the counter has moved, everything kept is dropped. Saves and deletes of the watched models
move it through signals (``watch``); code that changes them with ``QuerySet.update`` calls ``bump``
itself.

Reading the row is one query per request. When every process runs on one host (always so with
SQLite, whose file they all open; a single-host PostgreSQL install may opt in), a memory-mapped
file mirrors the counter (``settings.GENERATION_FILE``): ``bump`` moves it once its transaction has
committed, and a request reads eight bytes of shared memory instead of querying. The row is still
read once a second (``MIRROR_RECHECK_S``), so a process that died between its commit and the
mirror's move, or a change made outside the app, holds things back for a second at most.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Model
from django.db.models.signals import m2m_changed, post_delete, post_save

from trackers.models import AccessGeneration

ROW = 1
_SELECT = f"SELECT value FROM {AccessGeneration._meta.db_table} WHERE id = {ROW}"
MIRROR_RECHECK_S = 1.0
_COUNTER = struct.Struct("<Q")

Token = tuple[int, int]  # (the mirror's counter, or 0 without one; the row's value)


def current() -> Token:
    """What the counter is now: equal tokens mean nothing watched has changed in between."""
    mirror = _mirror()
    if mirror is None:
        return 0, _row()
    return mirror.read(), mirror.row_value()


def bump(**kwargs: Any) -> None:
    """Move the counter (a signal receiver as well); inside a transaction, with it."""
    with transaction.atomic():
        if not AccessGeneration.objects.filter(pk=ROW).update(value=F("value") + 1):
            AccessGeneration.objects.get_or_create(pk=ROW, defaults={"value": 1})
        mirror = _mirror()
        if mirror is not None:
            transaction.on_commit(mirror.bump)  # readers that see it must find the change committed


def watch(*models: type[Model], m2m: tuple[type[Model], ...] = ()) -> None:
    """Move the counter on every save and delete of ``models`` and every change of the ``m2m`` tables."""
    for model in models:
        uid = f"access-generation-{model._meta.label_lower}"
        post_save.connect(bump, sender=model, dispatch_uid=f"{uid}-save", weak=False)
        post_delete.connect(bump, sender=model, dispatch_uid=f"{uid}-delete", weak=False)
    for through in m2m:
        m2m_changed.connect(
            bump, sender=through, dispatch_uid=f"access-generation-{through._meta.label_lower}", weak=False
        )


def _row() -> int:
    # The driver's own cursor: Django's wrappers cost more than the query on the prediction path.
    if connection.connection is None:
        connection.ensure_connection()
    with connection.wrap_database_errors:
        cursor = connection.connection.cursor()
        try:
            cursor.execute(_SELECT)
            row = cursor.fetchone()
        finally:
            cursor.close()
    if row is None:
        AccessGeneration.objects.get_or_create(pk=ROW)
        return 0
    return int(row[0])


class Mirror:
    """The counter in a memory-mapped file that every process of this host maps: reading it is a
    memory read; moving it takes the file's lock, so no two moves count as one."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size < mmap.PAGESIZE:
            # New bytes read as zero; a second process's call finds the size and changes nothing.
            os.ftruncate(self._fd, mmap.PAGESIZE)
        self._map = mmap.mmap(self._fd, mmap.PAGESIZE)
        self._lock = threading.Lock()  # POSIX record locks exclude processes, not threads
        self._row_value = 0
        self._row_read_at = -MIRROR_RECHECK_S

    def read(self) -> int:
        value: int = _COUNTER.unpack_from(self._map, 0)[0]
        return value

    def bump(self) -> None:
        with self._lock:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
            try:
                _COUNTER.pack_into(self._map, 0, self.read() + 1)
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def row_value(self) -> int:
        """The row's value as read at most ``MIRROR_RECHECK_S`` ago."""
        now = time.monotonic()
        if now - self._row_read_at >= MIRROR_RECHECK_S:
            self._row_value, self._row_read_at = _row(), now
        return self._row_value


_mirrors: dict[str | Path, Mirror] = {}
_mirrors_lock = threading.Lock()


def _mirror() -> Mirror | None:
    path = settings.GENERATION_FILE
    if not path:
        return None
    found = _mirrors.get(path)
    if found is None:
        with _mirrors_lock:
            found = _mirrors.get(path)
            if found is None:
                found = _mirrors[path] = Mirror(Path(path))
    return found


# A forked child (a Celery pool process, a granian worker) opens its own: a lock held by a parent's
# thread at the fork would never be released in the child.
os.register_at_fork(after_in_child=_mirrors.clear)
