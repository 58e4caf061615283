"""Embedding a dataset's new segments: a job split into parts any bulk worker takes, identical texts
sharing one vector row, then the index rebuilt."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import F, Sum
from django.db.models.functions import Greatest
from django.utils import timezone

from trackers import bucket, encoders, work
from trackers.models import (
    Dataset,
    EmbedPart,
    Job,
    JobKind,
    JobState,
    Segment,
)
from trackers.services import create_job, finish_job, report_progress, vector_store

log = logging.getLogger(__name__)


# --- embedding ---------------------------------------------------------------------------


def plan_embedding(job: Job) -> work.Handed:
    """Split the dataset's segments without a vector into parts and queue a task for each.

    Parts are slices of segment ids, ``EMBED_PART_SEGMENTS`` segments each; the job stays running
    until its last part ends it. A rerun (the planner died, or its parts all ended while it was
    away) keeps the parts already planned.
    """
    assert job.dataset_id is not None, "embedding jobs belong to a dataset"
    if not job.parts.exists():
        size = settings.EMBED_PART_SEGMENTS
        bounds: list[list[int]] = []  # [first id, last id, segments]
        for pk in (
            Segment.objects.filter(dataset_id=job.dataset_id, vector_row__isnull=True)
            .order_by("pk")
            .values_list("pk", flat=True)
            .iterator(chunk_size=5000)
        ):
            if bounds and bounds[-1][2] < size:
                bounds[-1][1:] = [pk, bounds[-1][2] + 1]
            else:
                bounds.append([pk, pk, 1])
        total = sum(b[2] for b in bounds)
        with transaction.atomic():
            EmbedPart.objects.bulk_create(
                EmbedPart(job=job, number=i, first_segment=a, last_segment=b, segments=n)
                for i, (a, b, n) in enumerate(bounds, start=1)
            )
            parts = f"{len(bounds)} part{'s' if len(bounds) != 1 else ''}"
            report_progress(job, 0, total=total, message=f"embedding {total:,} texts in {parts}")
            for part in job.parts.all():
                work.enqueue(part)
    end_embedding_if_done(job.pk)
    return work.HANDED_TO_PARTS


def embed_part(part: EmbedPart) -> dict[str, int]:
    """Embed the part's segments that have no vector yet; identical texts share one row.

    The vectors are computed without any lock; storing them (appending to the dataset's vector
    store and pointing the segments at the rows) happens with the dataset's row locked, so parts
    running at once on several workers write one after the other, and a text another part stored
    in the meantime reuses that row.
    """
    dataset = Dataset.objects.get(jobs=part.job_id)
    encoder = encoders.get_encoder(dataset.encoder_id or None)
    store = vector_store(dataset)
    if store.rows and store.manifest()["encoder_id"] != encoder.encoder_id:
        raise RuntimeError(f"vector store of {dataset} was made by another encoder")
    ids_by_hash: dict[str, list[int]] = {}
    todo: dict[str, str] = {}
    for pk, h, t in Segment.objects.filter(
        dataset=dataset, vector_row__isnull=True, pk__gte=part.first_segment, pk__lte=part.last_segment
    ).values_list("pk", "text_hash", "text"):
        ids_by_hash.setdefault(h, []).append(pk)
        todo.setdefault(h, t)
    # Texts embedded before (by an earlier import, or another part) reuse their row.
    with transaction.atomic():
        known = _rows_of(dataset, list(todo))
        _assign_rows(ids_by_hash, known)
    hashes = [h for h in todo if h not in known]
    processed = part.segments - sum(len(ids_by_hash[h]) for h in hashes)
    _report_part(part, processed)
    vectors = np.zeros((len(hashes), encoder.dim), dtype=np.float32)
    step = settings.EMBED_BATCH_SIZE * 8
    for s in range(0, len(hashes), step):
        batch = hashes[s : s + step]
        vectors[s : s + step] = encoder.encode([todo[h] for h in batch], batch_size=settings.EMBED_BATCH_SIZE)
        processed += sum(len(ids_by_hash[h]) for h in batch)
        _report_part(part, processed)
    with transaction.atomic():
        # One writer of the store at a time (SQLite's immediate transactions serialize this too).
        was, count = (
            Dataset.objects.select_for_update()
            .filter(pk=dataset.pk)
            .values_list("encoder_id", "vector_count")
            .first()
        ) or ("", 0)
        store = vector_store(dataset, rows=count)  # what other hosts appended, under the same lock
        known = _rows_of(dataset, hashes)
        new = [i for i, h in enumerate(hashes) if h not in known]
        # The vectors are durable (here, and in the shared bucket) before any segment points at them;
        # a crash before the commit leaves unreferenced rows at worst, and the rerun embeds these
        # segments again.
        first = store.append(vectors[new], encoder.encoder_id) if new else 0
        if new:
            bucket.push(store.root / store.manifest()["chunks"][-1]["file"])
            bucket.push(store.root / store.MANIFEST)
        _assign_rows(ids_by_hash, {**known, **{hashes[i]: first + k for k, i in enumerate(new)}})
        if was != encoder.encoder_id:  # saved (watched): what reads this dataset's vectors must know
            dataset.encoder_id, dataset.vector_count = encoder.encoder_id, store.rows
            dataset.save(update_fields=["encoder_id", "vector_count"])
        else:
            Dataset.objects.filter(pk=dataset.pk).update(vector_count=store.rows)
    return {"stored": len(new), "processed": part.segments}


def _rows_of(dataset: Dataset, hashes: Sequence[str]) -> dict[str, int | None]:
    """The vector row of each of ``hashes`` that has one in ``dataset`` (never None)."""
    rows: dict[str, int | None] = {}
    for i in range(0, len(hashes), 5000):
        rows.update(
            Segment.objects.filter(
                dataset=dataset, vector_row__isnull=False, text_hash__in=hashes[i : i + 5000]
            ).values_list("text_hash", "vector_row")
        )
    return rows


def _report_part(part: EmbedPart, processed: int) -> None:
    """The part's progress, and its job's: the sum over its parts (never going back)."""
    work.heartbeat(part, processed=processed)
    done = EmbedPart.objects.filter(job_id=part.job_id).aggregate(n=Sum("processed"))["n"] or 0
    Job.objects.filter(pk=part.job_id).update(
        processed=Greatest(F("processed"), done), heartbeat_at=timezone.now()
    )


def end_embedding_if_done(job_id: int) -> None:
    """End an embedding job whose parts have all ended: a failed part fails it (saying which),
    else it succeeds and queues the index build. Parts ending at once end it once."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id, state=JobState.RUNNING).first()
        if job is None or job.kind != JobKind.EMBED:
            return
        parts = list(job.parts.all())
        failed = next((p for p in parts if p.state == JobState.FAILED), None)
        if failed is not None:
            work.fail(job, f"part {failed.number} of {len(parts)} failed: {failed.error}")
            return
        if any(p.state != JobState.SUCCEEDED for p in parts):
            return
        stored = sum(p.stored for p in parts)
        split = f" in {len(parts)} parts" if len(parts) > 1 else ""
        finish_job(job, state=JobState.SUCCEEDED, message=f"embedded {stored:,} distinct texts{split}")
        assert job.dataset is not None
        create_job(
            dataset=job.dataset, kind=JobKind.INDEX, user=job.created_by, params={"after": str(job.code)}
        )


def part_ended(sender: type[EmbedPart], row: EmbedPart, **kwargs: Any) -> None:
    end_embedding_if_done(row.job_id)


def _assign_rows(ids_by_hash: dict[str, list[int]], rows: Mapping[str, int | None]) -> None:
    objs = [Segment(pk=pk, vector_row=row) for h, row in rows.items() for pk in ids_by_hash.get(h, ())]
    Segment.objects.bulk_update(objs, ["vector_row"], batch_size=1000)
