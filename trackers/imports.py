"""Imports: an uploaded file becomes documents and segments (parsed by ``trackers.importing``), as a job."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction

from trackers import audit, importing
from trackers.errors import Invalid
from trackers.models import (
    AuditAction,
    Dataset,
    Document,
    Job,
    JobKind,
    JobState,
    Segment,
)
from trackers.services import create_job, enqueue_job, finish_job, report_progress, text_hash

if TYPE_CHECKING:
    from django.contrib.auth.models import User


log = logging.getLogger(__name__)

ON_ERROR_CHOICES = ("reject", "skip")


class ImportRejected(Invalid):
    """An upload refused before any work was queued (size, emptiness, options)."""


# --- import ------------------------------------------------------------------------------


def format_size(n: int) -> str:
    if n < 1000:
        return f"{n} bytes"
    if n < 1_000_000:
        return f"{n / 1000:.1f} kB"
    return f"{n / 1e6:.1f} MB"


def check_upload_size(filename: str, size: int) -> None:
    """Refuse a file over the upload limit before reading it."""
    if size > settings.UPLOAD_MAX_BYTES:
        raise ImportRejected(
            f"{filename}: the file is {format_size(size)}; the limit is {format_size(settings.UPLOAD_MAX_BYTES)}"
        )


def start_import(
    *,
    dataset: Dataset,
    user: User | None,
    filename: str,
    data: bytes,
    fmt: str = "auto",
    on_error: str = "reject",
) -> Job:
    """Check an upload's size and options, store it, and queue its import job."""
    filename = Path(filename or "upload").name
    if on_error not in ON_ERROR_CHOICES:
        raise ImportRejected(f"on_error must be 'reject' or 'skip', not '{on_error}'")
    if fmt not in importing.FORMATS:
        raise ImportRejected(f"format must be one of {', '.join(importing.FORMATS)}, not '{fmt}'")
    check_upload_size(filename, len(data))
    if not data.strip():
        raise ImportRejected(f"{filename}: the file is empty")
    with transaction.atomic():
        job = Job.objects.create(
            workspace=dataset.workspace,
            dataset=dataset,
            kind=JobKind.IMPORT,
            created_by=user,
            params={"filename": filename, "format": fmt, "on_error": on_error},
        )
        path = Path(settings.MEDIA_ROOT) / "uploads" / str(job.code) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        job.params["path"] = str(path)
        job.save(update_fields=["params"])
        enqueue_job(job)
        audit.record(
            AuditAction.DATASET_IMPORTED,
            workspace=dataset.workspace,
            target=f"{filename} into {dataset.name}",
            code=dataset.code,
            detail={"bytes": len(data), "format": fmt, "on_error": on_error, "job": str(job.code)},
            user=user,
        )
    return job


def discard_upload(sender: type[Job], row: Job, **kwargs: Any) -> None:
    """An import's stored upload is deleted once its job has ended (after the outcome commits)."""
    path = row.params.get("path") if row.kind == JobKind.IMPORT else None
    if not path:
        return
    folder = Path(path).parent
    uploads = (Path(settings.MEDIA_ROOT) / "uploads").resolve()
    if folder.resolve().parent != uploads:  # only ever a job's own folder under uploads/
        return
    transaction.on_commit(lambda: shutil.rmtree(folder, ignore_errors=True))


@dataclass
class ImportOutcome:
    documents: int
    segments: int
    skipped: int


def run_import(job: Job) -> ImportOutcome | None:
    """Parse the stored upload and write its documents and segments in one transaction."""
    dataset = job.dataset
    assert dataset is not None
    path = Path(job.params["path"])
    name = job.params["filename"]
    limits = importing.Limits(
        max_chars=settings.SEGMENT_MAX_CHARS,
        split_chars=settings.SEGMENT_SPLIT_CHARS,
        zip_max_members=settings.ZIP_MAX_FILES,
        zip_max_member_bytes=settings.ZIP_MAX_FILE_BYTES,
        zip_max_total_bytes=settings.ZIP_MAX_TOTAL_BYTES,
        zip_max_ratio=settings.ZIP_MAX_RATIO,
    )
    report_progress(job, 0, message=f"reading {name}")
    parsed = importing.parse_file(name, path.read_bytes(), job.params.get("format", "auto"), limits)
    errors = [e.as_dict() for e in parsed.errors]
    # Entries passed over on purpose (a zip's hidden files, say) are listed with the problems, but
    # do not count as bad rows.
    skipped = [{**e.as_dict(), "skipped": True} for e in parsed.skipped]
    docs = parsed.documents
    seen = set()
    existing = set(
        Document.objects.filter(
            dataset=dataset, external_id__in=[d.external_id for d in docs if d.external_id]
        ).values_list("external_id", flat=True)
    )
    kept = []
    for d in docs:
        if d.external_id and (d.external_id in existing or d.external_id in seen):
            why = "is already in this dataset" if d.external_id in existing else "appears twice in this file"
            errors.append(
                {
                    "file": d.source,
                    "line": None,
                    "field": "id",
                    "message": f"document id '{d.external_id}' {why}",
                    "text": f"{d.source}: document id '{d.external_id}' {why}",
                }
            )
            continue
        seen.add(d.external_id)
        kept.append(d)
    report_progress(job, 0, total=len(kept))
    if parsed.fatal or (errors and job.params.get("on_error") == "reject") or not kept:
        why = (
            f"the file cannot be read: {parsed.errors[0]}"
            if parsed.fatal and parsed.errors
            else "the file cannot be read"
            if parsed.fatal
            else "nothing to import"
            if not kept
            else f"{len(errors)} bad row(s); nothing was imported (choose 'skip bad rows' to import the rest)"
        )
        finish_job(
            job,
            state=JobState.FAILED,
            message=why,
            errors=errors + skipped,
            result={"documents": 0, "segments": 0, "skipped": len(errors), "rows": parsed.rows},
        )
        return None
    n_segments = 0
    batch = 500
    with transaction.atomic():
        for start in range(0, len(kept), batch):
            chunk = kept[start : start + batch]
            objs = Document.objects.bulk_create(
                [
                    Document(
                        dataset=dataset,
                        external_id=d.external_id,
                        title=d.title[:255],
                        kind=d.kind,
                        metadata=d.metadata,
                        occurred_at=d.occurred_at,
                        imported_by_job=job,
                    )
                    for d in chunk
                ]
            )
            segs = [
                Segment(
                    dataset=dataset,
                    document=doc,
                    position=i,
                    speaker=s.speaker,
                    text=s.text,
                    text_hash=text_hash(s.text),
                    start_time=s.start,
                    end_time=s.end,
                    known_label=s.label,
                )
                for doc, d in zip(objs, chunk, strict=True)
                for i, s in enumerate(d.segments)
            ]
            Segment.objects.bulk_create(segs, batch_size=2000)
            n_segments += len(segs)
            report_progress(job, start + len(chunk))
        outcome = ImportOutcome(documents=len(kept), segments=n_segments, skipped=len(errors))
        msg = f"imported {outcome.documents:,} documents, {outcome.segments:,} segments"
        if errors:
            msg += f"; skipped {len(errors)} bad row(s)"
        if skipped:
            msg += f"; passed over {len(skipped)} file(s) of the archive (listed)"
        finish_job(
            job,
            state=JobState.SUCCEEDED,
            message=msg,
            errors=errors + skipped,
            result={**outcome.__dict__, "rows": parsed.rows},
        )
        create_job(dataset=dataset, kind=JobKind.EMBED, user=job.created_by, params={"after": str(job.code)})
    return outcome
