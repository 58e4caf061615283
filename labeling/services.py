"""Similarity index and search over a dataset's segments."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from labeling.ml import index as faiss_index
from trackers import encoders
from trackers.models import Dataset, Job, Segment
from trackers.services import report_progress, vector_store


class IndexNotReady(RuntimeError):
    """The dataset has no search index yet."""


def rebuild_index(job: Job) -> str:
    """Build a new index file from the stored vectors, then point the dataset at it."""
    dataset = Dataset.objects.get(pk=job.dataset_id)
    store = vector_store(dataset)
    vectors = store.load()
    kind = faiss_index.choose_kind(len(vectors), settings.INDEX_KIND, settings.INDEX_FLAT_MAX)
    report_progress(
        job, 0, total=len(vectors), message=f"building {kind} index over {len(vectors):,} vectors"
    )
    built = faiss_index.build(vectors, kind)
    folder = Path(settings.ARTIFACT_ROOT) / "datasets" / str(dataset.code) / "index"
    path = folder / f"index-{timezone.now():%Y%m%d%H%M%S%f}-{len(vectors)}.faiss"
    faiss_index.save(built, path)
    previous = dataset.index_file
    with transaction.atomic():
        # Only move forward: a slower build of older vectors must not replace a newer index.
        swapped = Dataset.objects.filter(pk=dataset.pk, index_size__lte=len(vectors)).update(
            index_file=str(path), index_kind=kind, index_size=len(vectors), index_built_at=timezone.now()
        )
    if not swapped:
        path.unlink(missing_ok=True)
        return "a newer index is already live"
    if previous and previous != str(path):
        Path(previous).unlink(missing_ok=True)
    report_progress(job, len(vectors))
    return f"{kind} index over {len(vectors):,} vectors"


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
    if not dataset.index_file or not Path(dataset.index_file).exists():
        raise IndexNotReady(f"'{dataset.name}' has no search index yet; import and embed a file first")
    encoder = encoders.get_encoder(dataset.encoder_id or None)
    query_vec = encoder.encode([query])
    idx = faiss_index.load(Path(dataset.index_file))
    scores, rows = faiss_index.search(idx, query_vec, k)
    pairs = [(float(s), int(r)) for s, r in zip(scores[0], rows[0], strict=True) if r >= 0]
    by_row: dict[int, list[Segment]] = {}
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


DOCUMENT_LINES_SHOWN = 200


def key_lines(tracker, document, n: int = 3) -> tuple[list[Segment], set[int]]:
    """A document card's lines (up to ``DOCUMENT_LINES_SHOWN``) and the ids of its key lines.

    ``n`` key lines, fewer in short documents (one per three lines), so they stay a hint.

    Key lines are those the tracker's latest model scores highest; before any training, those
    closest in meaning to the tracker's example sentences.
    """
    from labeling.game import eligible_segments
    from serving.models import TrainingState
    from serving.services import scorer_for

    lines = list(Segment.objects.filter(document=document).order_by("position")[:DOCUMENT_LINES_SHOWN])
    candidates = list(eligible_segments(tracker).filter(document=document).order_by("position"))
    if not candidates:
        return lines, set()
    vectors = vector_store(document.dataset).get([s.vector_row for s in candidates])
    run = tracker.training_runs.filter(state=TrainingState.SUCCEEDED).order_by("-finished_at", "-id").first()
    if run is not None and run.head_file and Path(run.head_file).exists():
        scores = scorer_for(run).score(vectors, [s.text for s in candidates])
    else:
        seeds = list(tracker.seeds.values_list("text", flat=True))
        if not seeds:
            return lines, set()
        seed_vecs = encoders.get_encoder(document.dataset.encoder_id or None).encode(seeds)
        scores = (vectors @ seed_vecs.T).max(axis=1)
    n = min(n, max(1, len(candidates) // 3))
    best = sorted(range(len(candidates)), key=lambda i: -float(scores[i]))[:n]
    return lines, {candidates[i].pk for i in best}
