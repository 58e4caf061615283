"""Similarity index and search over a dataset's segments: build, swap, query."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from trackers import bucket, encoders
from trackers.ml import index as faiss_index
from trackers.models import Dataset, Job, Segment
from trackers.services import report_progress, vector_store


class IndexNotReady(RuntimeError):
    """The dataset has no search index yet."""


def rebuild_index(job: Job) -> str:
    """Build a new index file from the stored vectors, then point the dataset at it."""
    assert job.dataset_id is not None, "index jobs belong to a dataset"
    dataset = Dataset.objects.get(pk=job.dataset_id)
    store = vector_store(dataset)
    vectors = store.load()
    kind = faiss_index.choose_kind(len(vectors), settings.INDEX_KIND, settings.INDEX_FLAT_MAX)
    report_progress(
        job,
        0,
        total=len(vectors),
        message=f"building the search index ({Dataset.INDEX_NAMES.get(kind, kind)}) over {len(vectors):,} texts",
    )
    built = faiss_index.build(vectors, kind)
    folder = Path(settings.ARTIFACT_ROOT) / "datasets" / str(dataset.code) / "index"
    path = folder / f"index-{timezone.now():%Y%m%d%H%M%S%f}-{len(vectors)}.faiss"
    faiss_index.save(built, path)
    bucket.push(path)  # every host can fetch it before the row names it
    previous = dataset.index_file
    with transaction.atomic():
        # Only move forward: a slower build of older vectors must not replace a newer index.
        swapped = Dataset.objects.filter(pk=dataset.pk, index_size__lte=len(vectors)).update(
            index_file=str(path), index_kind=kind, index_size=len(vectors), index_built_at=timezone.now()
        )
    if not swapped:
        path.unlink(missing_ok=True)
        bucket.remove(path)
        return "a newer index is already live"
    if previous and previous != str(path):
        bucket.local(previous).unlink(missing_ok=True)
        bucket.remove(Path(previous))
    report_progress(job, len(vectors))
    return f"search index ({Dataset.INDEX_NAMES.get(kind, kind)}) over {len(vectors):,} distinct texts"


def neighbours(segment: Segment) -> tuple[Segment | None, Segment | None]:
    """The utterances just before and after ``segment`` in its document."""
    near = {
        s.position: s
        for s in Segment.objects.filter(
            document_id=segment.document_id, position__in=[segment.position - 1, segment.position + 1]
        )
    }
    return near.get(segment.position - 1), near.get(segment.position + 1)


@dataclass
class Hit:
    score: float
    segment: Segment
    previous: Segment | None
    next: Segment | None
    duplicates: int


def search_segments(dataset: Dataset, query: str, *, k: int = 20) -> list[Hit]:
    """The segments most similar in meaning to ``query``, with their neighbours in the document."""
    index_path = bucket.fetched(dataset.index_file) if dataset.index_file else None
    if index_path is None or not index_path.exists():
        raise IndexNotReady(f"'{dataset.name}' has no search index yet; import and embed a file first")
    encoder = encoders.get_encoder(dataset.encoder_id or None)
    query_vec = encoder.encode([query])
    idx = faiss_index.load(index_path)
    scores, rows = faiss_index.search(idx, query_vec, k)
    pairs = [(float(s), int(r)) for s, r in zip(scores[0], rows[0], strict=True) if r >= 0]
    by_row: dict[int | None, list[Segment]] = {}  # never None: filtered on vector_row__in
    for seg in (
        Segment.objects.filter(dataset=dataset, vector_row__in=[r for _, r in pairs])
        .select_related("document")
        .order_by("id")
    ):
        by_row.setdefault(seg.vector_row, []).append(seg)
    hits = []
    for score, row in pairs:
        segs = by_row.get(row)
        if not segs:
            continue
        seg = segs[0]
        previous, following = neighbours(seg)
        hits.append(
            Hit(score=score, segment=seg, previous=previous, next=following, duplicates=len(segs) - 1)
        )
    return hits
