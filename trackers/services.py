"""Corpus services: workspaces, datasets and the job lifecycle (imports, embedding and tracker
definitions have modules of their own: ``trackers.imports``, ``trackers.embedding``, ``trackers.definitions``)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q

from trackers import audit, bucket, errors, text, work
from trackers.ml.storage import VectorStore
from trackers.models import (
    AuditAction,
    Dataset,
    EmbedPart,
    Job,
    JobKind,
    JobState,
    Membership,
    Role,
    Workspace,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import User


log = logging.getLogger(__name__)


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def create_workspace(*, name: str, owner: User) -> Workspace:
    """A new workspace with ``owner`` as its owner."""
    with transaction.atomic():
        ws = Workspace.objects.create(name=name)
        Membership.objects.create(workspace=ws, user=owner, role=Role.OWNER)
        audit.record(AuditAction.WORKSPACE_CREATED, workspace=ws, target=name, code=ws.code, user=owner)
    return ws


NAME_MAX_CHARS = 120
DESCRIPTION_MAX_CHARS = 2_000


class InputInvalid(errors.Invalid):
    """A value a user typed cannot be stored as given; the message names the field."""


def checked_text(value: str, field: str, max_chars: int, error: type[errors.Refused] = InputInvalid) -> str:
    """``value`` if it fits in ``max_chars`` and holds only storable characters; else ``error`` naming ``field``."""
    if len(value) > max_chars:
        raise error(f"{field} is {len(value):,} characters long; the limit is {max_chars:,}")
    why = text.problem(value)
    if why:
        raise error(f"{field} {why}")
    return value


def create_dataset(*, workspace: Workspace, name: str, description: str = "") -> Dataset:
    """An empty dataset; InputInvalid when the name or description cannot be stored."""
    name = checked_text(" ".join(name.split()), "name", NAME_MAX_CHARS)
    if not name:
        raise InputInvalid("name is empty")
    description = checked_text(description.strip(), "description", DESCRIPTION_MAX_CHARS)
    with transaction.atomic():
        ds = Dataset.objects.create(workspace=workspace, name=name, description=description)
        audit.record(AuditAction.DATASET_CREATED, workspace=workspace, target=name, code=ds.code)
    return ds


def vector_store(dataset: Dataset, rows: int | None = None) -> VectorStore:
    """A dataset's vectors on this host, with at least ``rows`` rows (default: as many as the row says
    it has), fetched from the shared bucket when this host's copy has fewer (``trackers.bucket``)."""
    store = VectorStore(Path(settings.ARTIFACT_ROOT) / "datasets" / str(dataset.code) / "vectors")
    wanted = dataset.vector_count if rows is None else rows
    if bucket.enabled() and store.rows < wanted:
        bucket.fetched(store.root, again=(VectorStore.MANIFEST,))
    return store


# --- job lifecycle -----------------------------------------------------------------------


def enqueue_job(job: Job) -> None:
    """Send the job's task once the surrounding transaction commits."""
    work.enqueue(job)


def import_before(job: Job) -> Job | None:
    """The import whose documents ``job`` (an embedding) was queued to embed; None when it was asked
    for on its own."""
    after = (job.params or {}).get("after")
    return Job.objects.filter(code=after, kind=JobKind.IMPORT).first() if after else None


def create_job(
    *,
    dataset: Dataset,
    kind: str,
    user: User | None = None,
    params: dict[str, Any] | None = None,
    total: int = 0,
) -> Job:
    job = Job.objects.create(
        workspace=dataset.workspace,
        dataset=dataset,
        kind=kind,
        params=params or {},
        created_by=user,
        total=total,
    )
    enqueue_job(job)
    return job


def report_progress(job: Job, processed: int, total: int | None = None, message: str = "") -> None:
    fields: dict[str, Any] = {"processed": processed}
    if total is not None:
        fields["total"] = total
    if message:
        fields["message"] = message[:500]
    work.heartbeat(job, **fields)


def finish_job(
    job: Job,
    *,
    state: str,
    message: str = "",
    errors: list[dict[str, Any]] | None = None,
    result: dict[str, Any] | None = None,
) -> None:
    fields: dict[str, Any] = {"message": message[:500]}
    if state == JobState.FAILED:
        fields.update(job.failure_fields(message))
    if errors is not None:
        fields["errors"] = errors
    if result is not None:
        fields["result"] = result
    if state == JobState.SUCCEEDED:
        fields["processed"] = max(job.processed, job.total)
    work.finish(job, state, **fields)


def requeue_stale_jobs() -> dict[str, list[int]]:
    """Queue again jobs and embedding parts whose worker died or whose message was lost; fail those
    out of attempts. An embedding job waiting for its parts is theirs to end, not the sweeper's."""
    waiting = Exists(
        EmbedPart.objects.filter(job=OuterRef("pk"), state__in=[JobState.QUEUED, JobState.RUNNING])
    )
    jobs = work.sweep(Job, waiting=Q(waiting))
    parts = work.sweep(EmbedPart)
    return {**jobs, "parts_requeued": parts["requeued"], "parts_failed": parts["failed"]}
