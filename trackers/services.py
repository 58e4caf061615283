"""Corpus services: workspaces, datasets, imports, embedding and the job lifecycle."""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q, Sum
from django.db.models.functions import Greatest
from django.utils import timezone

from trackers import encoders, errors, importing, text, work
from trackers.ml.storage import VectorStore
from trackers.models import (
    Dataset,
    Document,
    EmbedPart,
    Job,
    JobKind,
    JobState,
    Membership,
    Role,
    Segment,
    Workspace,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from trackers.models import Tracker

log = logging.getLogger(__name__)

ON_ERROR_CHOICES = ("reject", "skip")


class ImportRejected(errors.Invalid):
    """An upload refused before any work was queued (size, emptiness, options)."""


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def create_workspace(*, name: str, owner: User) -> Workspace:
    """A new workspace with ``owner`` as its owner."""
    with transaction.atomic():
        ws = Workspace.objects.create(name=name)
        Membership.objects.create(workspace=ws, user=owner, role=Role.OWNER)
    return ws


NAME_MAX_CHARS = 120
DESCRIPTION_MAX_CHARS = 2_000
MAX_SEEDS = 100  # example sentences of one tracker
MAX_KEYWORDS = 50
KEYWORD_MAX_CHARS = 100


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
    return Dataset.objects.create(workspace=workspace, name=name, description=description)


def vector_store(dataset: Dataset) -> VectorStore:
    return VectorStore(Path(settings.ARTIFACT_ROOT) / "datasets" / str(dataset.code) / "vectors")


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
        was = (
            Dataset.objects.select_for_update()
            .filter(pk=dataset.pk)
            .values_list("encoder_id", flat=True)
            .first()
        )
        known = _rows_of(dataset, hashes)
        new = [i for i, h in enumerate(hashes) if h not in known]
        # The vectors are durable before any segment points at them; a crash before the commit
        # leaves unreferenced rows at worst, and the rerun embeds these segments again.
        first = store.append(vectors[new], encoder.encoder_id) if new else 0
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


# --- trackers ----------------------------------------------------------------------------

MIN_SEEDS = 3


class TrackerInvalid(errors.Invalid):
    """A tracker definition that cannot be used, with the reason."""


MAX_TOPIC_LABELS = 9  # one key each, 1 to 9


def clean_topic_labels(labels: list[str]) -> list[str]:
    """Topic label names, checked: 2 to 9 distinct and short."""
    names = [" ".join(n.split()) for n in labels if n and n.strip()]
    if not 2 <= len(names) <= MAX_TOPIC_LABELS:
        raise TrackerInvalid(f"a topic tracker needs 2 to {MAX_TOPIC_LABELS} labels (got {len(names)})")
    lowered = [n.lower() for n in names]
    repeated = next((n for i, n in enumerate(names) if lowered.index(n.lower()) != i), None)
    if repeated:
        raise TrackerInvalid(f"label '{repeated}' is given twice")
    too_long = next((n for n in names if len(n) > 40), None)
    if too_long:
        raise TrackerInvalid(f"label '{too_long[:40]}…' is longer than 40 characters")
    return names


def define_tracker(
    *,
    workspace: Workspace,
    user: User | None,
    name: str,
    datasets: list[Dataset],
    seeds: Sequence[str | tuple[str, str]],
    description: str = "",
    kind: str = "concept",
    labels: list[str] | None = None,
    granularity: str = "segment",
    keywords: list[str] | None = None,
    target_precision: float = 0.8,
    round_size: int = 25,
    speaker_filter: str = "",
) -> Tracker:
    """A tracker with its example sentences, checked; the learning loop (``labeling``) starts it.

    ``seeds`` are sentences (concept trackers: examples of a match) or, for topic trackers,
    (label, sentence) pairs with at least one example per label.
    """
    from trackers.models import Granularity, SeedExample, Tracker, TrackerKind, TrackerState

    name = checked_text(" ".join(name.split()), "name", NAME_MAX_CHARS, TrackerInvalid)
    if not name:
        raise TrackerInvalid("name is empty")
    description = checked_text(description.strip(), "description", DESCRIPTION_MAX_CHARS, TrackerInvalid)
    speaker_filter = checked_text(speaker_filter.strip(), "speaker", NAME_MAX_CHARS, TrackerInvalid)
    if len(seeds) > MAX_SEEDS:
        raise TrackerInvalid(f"give at most {MAX_SEEDS} example sentences (got {len(seeds):,})")
    keywords = [k.strip() for k in (keywords or []) if k and k.strip()]
    if len(keywords) > MAX_KEYWORDS:
        raise TrackerInvalid(f"give at most {MAX_KEYWORDS} keywords (got {len(keywords):,})")
    for i, k in enumerate(keywords, 1):
        checked_text(k, f"keyword {i}", KEYWORD_MAX_CHARS, TrackerInvalid)
    for i, label in enumerate(labels or [], 1):
        checked_text(str(label), f"label {i}", NAME_MAX_CHARS, TrackerInvalid)
    for i, seed in enumerate(seeds, 1):
        for part in [seed] if isinstance(seed, str) else list(seed):
            checked_text(str(part), f"example {i}", settings.SEGMENT_MAX_CHARS, TrackerInvalid)
    if kind not in TrackerKind.values:
        raise TrackerInvalid(f"kind must be one of {', '.join(TrackerKind.values)} (got '{kind}')")
    if granularity not in Granularity.values:
        raise TrackerInvalid(
            f"granularity must be one of {', '.join(Granularity.values)} (got '{granularity}')"
        )
    if kind == TrackerKind.TOPIC:
        labels = clean_topic_labels(labels or [])
        bare = next((s for s in seeds if isinstance(s, str)), None)
        if bare is not None:
            raise TrackerInvalid(f"topic examples need a label: '{bare[:60]}' has none")
        labelled = (s for s in seeds if not isinstance(s, str))  # all of them, checked just above
        pairs = [(str(lab).strip(), " ".join(str(t).split())) for lab, t in labelled if t and str(t).strip()]
        by_name = {n.lower(): n for n in labels}
        unknown = next((lab for lab, _ in pairs if lab.lower() not in by_name), None)
        if unknown is not None:
            raise TrackerInvalid(f"example label '{unknown}' is not one of the labels ({', '.join(labels)})")
        pairs = [(by_name[lab.lower()], t) for lab, t in pairs]
        missing = [n for n in labels if n not in {lab for lab, _ in pairs}]
        if missing:
            raise TrackerInvalid(f"give at least one example for every label; '{missing[0]}' has none")
    else:
        labels = []
        texts = [s[1] if isinstance(s, tuple | list) else s for s in seeds]
        pairs = [("yes", " ".join(t.split())) for t in texts if t and t.strip()]
    if len(pairs) < MIN_SEEDS:
        raise TrackerInvalid(f"give at least {MIN_SEEDS} example sentences (got {len(pairs)})")
    too_long = [i + 1 for i, (_, s) in enumerate(pairs) if len(s) > settings.SEGMENT_MAX_CHARS]
    if too_long:
        raise TrackerInvalid(
            f"example {too_long[0]} is longer than {settings.SEGMENT_MAX_CHARS:,} characters"
        )
    if not datasets:
        raise TrackerInvalid("choose at least one dataset")
    foreign = [d.name for d in datasets if d.workspace_id != workspace.pk]
    if foreign:
        raise TrackerInvalid(f"dataset '{foreign[0]}' is not in this workspace")
    unembedded = [d.name for d in datasets if not d.vector_count]
    if unembedded:
        raise TrackerInvalid(
            f"dataset '{unembedded[0]}' has no embedded segments yet; import and embed a file first"
        )
    if len({d.encoder_id for d in datasets}) > 1:
        raise TrackerInvalid("these datasets were embedded by different encoders and cannot share a tracker")
    if not 0.05 <= target_precision <= 0.999:
        raise TrackerInvalid("target precision must be between 0.05 and 0.999")
    if not 5 <= round_size <= 200:
        raise TrackerInvalid("round size must be between 5 and 200 cards")
    if Tracker.objects.filter(workspace=workspace, name=name).exists():
        raise TrackerInvalid(f"a tracker named '{name}' already exists in this workspace")
    with transaction.atomic():
        tracker = Tracker.objects.create(
            workspace=workspace,
            name=name,
            description=description,
            kind=kind,
            labels=labels,
            granularity=granularity,
            created_by=user,
            keywords=keywords,
            target_precision=target_precision,
            round_size=round_size,
            speaker_filter=speaker_filter.strip(),
            state=TrackerState.LABELING,
        )
        tracker.datasets.set(datasets)
        SeedExample.objects.bulk_create([SeedExample(tracker=tracker, text=t, label=lab) for lab, t in pairs])
    return tracker
