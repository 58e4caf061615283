"""The access generation: one counter that every change to what serving a request depends on moves.

Reading it is one indexed single-row query, so a web process can keep keys, trackers and live
versions it has looked up and still see a revocation or a promotion on the very next request, in
every process: when the counter has moved, everything kept is dropped. Saves and deletes of the
watched models move it through signals (``watch``); code that changes them with ``QuerySet.update``
calls ``bump`` itself.
"""

from __future__ import annotations

from typing import Any

from django.db import connection, transaction
from django.db.models import F, Model
from django.db.models.signals import m2m_changed, post_delete, post_save

from trackers.models import AccessGeneration

ROW = 1
_SELECT = f"SELECT value FROM {AccessGeneration._meta.db_table} WHERE id = {ROW}"


def current() -> int:
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


def bump(**kwargs: Any) -> None:
    """Move the counter (a signal receiver as well); inside a transaction, with it."""
    with transaction.atomic():
        if not AccessGeneration.objects.filter(pk=ROW).update(value=F("value") + 1):
            AccessGeneration.objects.get_or_create(pk=ROW, defaults={"value": 1})


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
