"""The one machinery for claimable background work: claim, heartbeat, finish, give up, sweep, run.

Every kind of work (corpus jobs, training runs, and later export and delivery) is a row of a
``ClaimableWork`` model and a Celery task that receives only its id. The task claims the row by
compare-and-set, so a redelivered or duplicated message finds nothing to do; a worker that dies
leaves the row running with a stale heartbeat, and the next claim (or the sweeper) takes it over.
Each claim counts an attempt; past ``WORK_MAX_ATTEMPTS`` the row fails with that reason instead of
being tried forever (a job that kills its worker every time would otherwise hold it forever).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from celery import current_app
from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F, Q
from django.dispatch import Signal
from django.utils import timezone

from trackers import audit, context, errors, metrics
from trackers.models import AuditAction, ClaimableWork, WorkState

if TYPE_CHECKING:
    from celery import Task
    from django.db.models import QuerySet

log = logging.getLogger(__name__)

W = TypeVar("W", bound=ClaimableWork)

# Sent with ``row`` when work fails or is given up; a higher layer reacts (e.g. a failed training
# run still queues the tracker's next round) without this layer knowing about it.
work_failed = Signal()
work_finished = Signal()  # sent with ``row`` when work ends, whatever its outcome


class Handed:
    """What work returns when it has handed itself to parts of its own: the row stays running and
    the parts end it (an embedding job whose slices any worker may take)."""


HANDED_TO_PARTS = Handed()


def _stale_before(model: type[ClaimableWork]) -> Any:
    return timezone.now() - timedelta(seconds=model.stale_seconds())


def _claimable(model: type[ClaimableWork]) -> Q:
    return Q(state=WorkState.QUEUED) | Q(state=WorkState.RUNNING, heartbeat_at__lt=_stale_before(model))


def gave_up_reason(attempts: int) -> str:
    return (
        f"gave up after {attempts} attempt{'s' if attempts != 1 else ''}: the worker stopped "
        "each time before finishing "
        "(for example, it ran out of memory or was killed)"
    )


def claim(model: type[W], pk: int, ready: Q | None = None) -> W | None:
    """Compare-and-set a queued (or abandoned running) row to running; None if it is not ours to run
    (or, with ``ready``, not ready yet: a retry that has not come due).

    A row that has used up its attempts is failed here, with that reason.
    """
    now = timezone.now()
    cap = settings.WORK_MAX_ATTEMPTS
    if model.objects.filter(_claimable(model), ready or Q(), pk=pk, attempts__lt=cap).update(
        state=WorkState.RUNNING, started_at=now, heartbeat_at=now, attempts=F("attempts") + 1
    ):
        return model.objects.get(pk=pk)
    give_up(model, model.objects.filter(_claimable(model), pk=pk, attempts__gte=cap))
    return None


def give_up(model: type[W], queryset: QuerySet[W]) -> list[int]:
    """Fail every row of ``queryset`` that has used up its attempts, saying so."""
    failed = []
    for row in queryset.filter(attempts__gte=settings.WORK_MAX_ATTEMPTS):
        reason = gave_up_reason(row.attempts)
        # Only if still claimable: a worker may have finished it in the meantime.
        if model.objects.filter(_claimable(model), pk=row.pk).update(
            state=WorkState.FAILED, finished_at=timezone.now(), **row.failure_fields(reason)
        ):
            log.warning("%s %s: %s", model.__name__, row.pk, reason)
            row.refresh_from_db()
            work_finished.send(sender=model, row=row)
            work_failed.send(sender=model, row=row)
            failed.append(row.pk)
    return failed


REQUEST_ID_HEADER = "trackers_request_id"


def send_on_commit(task: str, *, countdown: float | None = None, **kwargs: Any) -> None:
    """Send the Celery task named ``task`` with ``kwargs`` once the surrounding transaction commits
    (at once outside one): the one way work is queued, so a worker never looks for a row that is
    not committed yet. By name, so that no service imports the tasks that call it. The task runs
    with the id of the request that queued it (``config.celery``), so its log lines and audit
    entries carry it."""
    rid = context.request_id()

    def send() -> None:
        if task not in current_app.tasks:  # a web process registers an app's tasks on first use
            importlib.import_module(task.rpartition(".")[0])
        current_app.tasks[task].apply_async(
            kwargs=kwargs, countdown=countdown or None, headers={REQUEST_ID_HEADER: rid} if rid else None
        )

    transaction.on_commit(send)


def enqueue(row: ClaimableWork, *, countdown: float | None = None) -> None:
    """Queue the row's task (``ClaimableWork.task_name``) with its pk, once the caller commits."""
    send_on_commit(row.task_name(), countdown=countdown, work_id=row.pk)


def heartbeat(row: ClaimableWork, **fields: Any) -> None:
    """Tell the sweeper the work is alive (and save any progress ``fields`` with it)."""
    fields["heartbeat_at"] = timezone.now()
    for name, value in fields.items():
        setattr(row, name, value)
    type(row).objects.filter(pk=row.pk).update(**fields)


def finish(row: ClaimableWork, state: str, **fields: Any) -> None:
    """Record the outcome of claimed work."""
    for name, value in fields.items():
        setattr(row, name, value)
    row.state, row.finished_at = state, timezone.now()
    row.save()
    if row.started_at is not None:
        kind = getattr(row, "kind", "") or row._meta.model_name or ""
        metrics.job_done(str(kind), str(state), (row.finished_at - row.started_at).total_seconds())
    work_finished.send(sender=type(row), row=row)


def fail(row: ClaimableWork, reason: str) -> None:
    finish(row, WorkState.FAILED, **row.failure_fields(reason))
    work_failed.send(sender=type(row), row=row)


def sweep(model: type[W], *, waiting: Q | None = None) -> dict[str, list[int]]:
    """Queue again rows whose worker died (running, stale heartbeat) or whose message was lost
    (queued too long); rows out of attempts fail instead. Rows matching ``waiting`` are left alone:
    they handed their work to parts, which have a sweep of their own."""
    abandoned = Q(state=WorkState.RUNNING, heartbeat_at__lt=_stale_before(model)) | Q(
        state=WorkState.QUEUED, created_at__lt=_stale_before(model)
    )
    if waiting is not None:
        abandoned &= ~waiting
    failed = give_up(model, model.objects.filter(abandoned))
    requeued = []
    for row in model.objects.filter(abandoned, attempts__lt=settings.WORK_MAX_ATTEMPTS):
        if model.objects.filter(abandoned, pk=row.pk).update(state=WorkState.QUEUED):
            with transaction.atomic():
                enqueue(row)
            requeued.append(row.pk)
    return {"requeued": requeued, "failed": failed}


def failure_message(exc: BaseException) -> str:
    """What a user is told of a failure: the database's own text (SQL, values) stays in the worker log."""
    if isinstance(exc, DatabaseError):
        return (
            f"the database refused to store the result ({type(exc).__name__}); the worker log has the details"
        )
    return f"{type(exc).__name__}: {exc}"


def run_claimed(
    task: Task,
    model: type[W],
    pk: int,
    work: Callable[[W], dict[str, Any] | Handed | None],
    ready: Q | None = None,
) -> None:
    """The body of every work task: claim, run ``work``, record success or the failure's reason.

    ``work`` returns the fields to save with success (or None), or ``HANDED_TO_PARTS`` to leave the
    row running for its parts to end. Reruns of finished work do nothing.
    """
    row = claim(model, pk, ready)
    if row is None:
        state = model.objects.filter(pk=pk).values_list("state", flat=True).first()
        if state == WorkState.RUNNING and not (task.request.is_eager or task.request.called_directly):
            # Either another worker is on it, or one died holding it (a redelivery after a kill
            # arrives before its heartbeat goes stale): look again once it could be stale.
            raise task.retry(countdown=model.stale_seconds() + 1, max_retries=None)
        log.info("%s %s is %s; nothing to do", model.__name__, pk, state or "gone")
        return
    try:
        fields = work(row)
    except Exception as exc:
        log.exception("%s %s failed", model.__name__, pk)
        row.refresh_from_db()
        fail(row, failure_message(exc))
        return
    if isinstance(fields, Handed):
        return
    row.refresh_from_db(fields=["state"])
    if row.state == WorkState.RUNNING:  # work may have finished it itself, with another outcome
        finish(row, WorkState.SUCCEEDED, **(fields or {}))


def retry_refusal(row: ClaimableWork) -> str | None:
    """Why failed work cannot simply run again (None: it can): it has not failed, or its kind says
    why not (``ClaimableWork.why_not_retried``)."""
    if row.state != WorkState.FAILED:
        return f"only failed work is retried; this is {row.state}"
    return row.why_not_retried()


def retry(row: ClaimableWork, *, workspace: Any, what: str) -> ClaimableWork:
    """Queue failed work again from a clean start (its attempts counted afresh); recorded in the
    audit log as ``what`` in ``workspace``."""
    refusal = retry_refusal(row)
    if refusal:
        raise errors.Conflict(refusal)
    with transaction.atomic():
        fields: dict[str, Any] = {
            "state": WorkState.QUEUED,
            "attempts": 0,
            "error": "",
            "started_at": None,
            "heartbeat_at": None,
            "finished_at": None,
        }
        if hasattr(row, "message"):
            fields["message"] = "queued again"
        if not type(row).objects.filter(pk=row.pk, state=WorkState.FAILED).update(**fields):
            raise errors.Conflict("it is not failed any more (retried already?)")
        enqueue(row)
        audit.record(
            AuditAction.JOB_RETRIED,
            workspace=workspace,
            target=what,
            code=row.code,
            detail={"error": row.error[:500]},
        )
    row.refresh_from_db()
    return row
