"""Bulk scoring: a stored dataset scored by live model versions, from the vectors its segments
already have (nothing is embedded again), as a background job with progress.

Segments are read in id order, a chunk at a time; each chunk's results and the job's checkpoint
(``done_through``, counts, histograms) are written in one transaction, so a worker that takes over
a killed one goes on after the last stored chunk and nothing is counted twice. Document trackers
score each document's mean vector once every segment has been read.

On the results page a reviewer marks a match right or wrong; the answer is stored as the tracker's
answer (strategy ``feedback``), so the next training run counts it: production feeds training.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet

from labeling import game
from labeling.models import Strategy
from serving import matches
from serving.ml import matching
from serving.models import EventSource, Feedback, ModelVersion, ScoredSegment, ScoringJob
from serving.versions import runtime, services
from trackers import encoders, errors, work
from trackers import services as corpus
from trackers.models import (
    Dataset,
    Document,
    Granularity,
    Job,
    JobKind,
    Segment,
    Tracker,
    TrackerKind,
    WorkState,
)
from trackers.services import vector_store

if TYPE_CHECKING:
    from django.contrib.auth.models import User

log = logging.getLogger(__name__)

BINS = 20  # score histogram bins over [0, 1]


class ScoringRefused(errors.Conflict):
    """A scoring job that cannot be made, and why."""


def start_scoring(
    *,
    dataset: Dataset,
    user: User | None,
    trackers: list[Tracker] | None = None,
    min_score: float | None = None,
) -> ScoringJob:
    """A job scoring ``dataset`` with the live version of each of ``trackers`` (every live tracker
    of the dataset's workspace if None), queued once the caller's transaction commits."""
    versions = services.serving_versions().filter(tracker__workspace=dataset.workspace_id, is_live=True)
    if trackers is not None:
        versions = versions.filter(tracker__in=trackers)
        without = {t.pk for t in trackers} - set(versions.values_list("tracker_id", flat=True))
        if without:
            name = next(t.name for t in trackers if t.pk in without)
            raise ScoringRefused(f"tracker '{name}' has no live model version yet: train it, or promote one")
    chosen = list(versions.order_by("tracker__name", "tracker_id"))
    if not chosen:
        raise ScoringRefused("this workspace has no tracker with a live model version to score with")
    if min_score is not None and not 0.0 <= min_score <= 1.0:
        raise ScoringRefused(f"min_score must be between 0 and 1; got {min_score}")
    if Job.objects.filter(
        dataset=dataset,
        kind__in=[JobKind.IMPORT, JobKind.EMBED],
        state__in=[WorkState.QUEUED, WorkState.RUNNING],
    ).exists():
        raise ScoringRefused(
            f"dataset '{dataset.name}' is still being imported or embedded: score it when its jobs are done"
        )
    encoder_of = services.encoder_ids_of([v.tracker_id for v in chosen])
    for version in chosen:
        if encoder_of.get(version.tracker_id) != dataset.encoder_id:
            raise ScoringRefused(
                f"tracker '{version.tracker.name}' was trained on vectors of another encoder "
                f"({encoder_of.get(version.tracker_id) or 'none'}) than dataset '{dataset.name}' "
                f"({dataset.encoder_id or 'not embedded'})"
            )
    total = _segments(dataset, None).count()
    return _queue(dataset, chosen, total, "segments", created_by=user, min_score=min_score)


def _queue(
    dataset: Dataset, versions: list[ModelVersion], total: int, what: str, **fields: Any
) -> ScoringJob:
    """A job scoring ``total`` segments of ``dataset`` with ``versions``, queued once the caller commits."""
    trackers = f"{len(versions)} tracker{'s' if len(versions) != 1 else ''}"
    with transaction.atomic():
        job = ScoringJob.objects.create(
            workspace_id=dataset.workspace_id,
            dataset=dataset,
            total=total,
            message=f"queued: {total:,} {what}, {trackers}",
            **fields,
        )
        job.versions.set(versions)
        work.enqueue(job)
    return job


def score_imported(sender: type[Job], row: Job, **kwargs: Any) -> ScoringJob | None:
    """When the documents of an import have been embedded, score them with every live tracker of the
    workspace (trained on the same encoder's vectors), so that their matches are alerted."""
    if row.kind != JobKind.EMBED or row.state != WorkState.SUCCEEDED or row.dataset_id is None:
        return None
    imported = corpus.import_before(row)
    if imported is None:  # embedding asked for on its own, not after an import
        return None
    dataset = row.dataset
    assert dataset is not None
    chosen = list(
        services.serving_versions()
        .filter(tracker__workspace=dataset.workspace_id, is_live=True)
        .order_by("tracker__name", "tracker_id")
    )
    encoder_of = services.encoder_ids_of([v.tracker_id for v in chosen])
    chosen = [v for v in chosen if encoder_of.get(v.tracker_id) == dataset.encoder_id]
    if not chosen:
        return None
    total = _segments(dataset, imported).count()
    if not total:
        return None
    return _queue(
        dataset,
        chosen,
        total,
        "imported segments",
        created_by=imported.created_by,
        source=EventSource.IMPORT,
        import_job=imported,
    )


def _segments(dataset: Dataset, import_job: Job | None) -> QuerySet[Segment]:
    """The segments a job scores: every one with a vector, or those of one import's documents."""
    segments = Segment.objects.filter(dataset=dataset, vector_row__isnull=False)
    if import_job is not None:
        segments = segments.filter(document__imported_by_job=import_job)
    return segments


def requeue_stale() -> dict[str, list[int]]:
    return work.sweep(ScoringJob)


@dataclass
class _Scorer:
    """One version's part of a job: who it reads, what it keeps, what it has counted."""

    version: ModelVersion
    labels: list[str]
    threshold: float | None
    keep_from: float  # results kept at or above this score
    speaker: str
    metadata: dict[str, Any]
    counts: dict[str, Any] = field(default_factory=dict)

    @property
    def topic(self) -> bool:
        return self.version.tracker.kind == TrackerKind.TOPIC

    def eligible(self, speakers: list[str], metadata: list[dict[str, Any]]) -> np.ndarray:
        ok = np.ones(len(speakers), dtype=bool)
        if self.speaker:
            ok &= np.array([matching.same_speaker(s, self.speaker) for s in speakers], dtype=bool)
        for key, value in self.metadata.items():
            ok &= np.array([(m or {}).get(key) == value for m in metadata], dtype=bool)
        return ok

    def count(self, scores: np.ndarray, labels: np.ndarray | None, matched: np.ndarray) -> None:
        c = self.counts
        c["scored"] = c.get("scored", 0) + len(scores)
        c["matches"] = c.get("matches", 0) + int(matched.sum())
        hist = np.histogram(scores, bins=BINS, range=(0.0, 1.0))[0]
        c["histogram"] = (np.asarray(c.get("histogram", [0] * BINS)) + hist).tolist()
        if labels is not None:
            per = c.setdefault("labels", {})
            for name, n in zip(*np.unique(labels, return_counts=True), strict=True):
                per[str(name)] = per.get(str(name), 0) + int(n)


def _scorers(job: ScoringJob) -> list[_Scorer]:
    scorers = []
    previous = job.result.get("trackers", {})
    for version in (
        services.serving_versions().filter(scoring_jobs=job).order_by("tracker__name", "tracker_id")
    ):
        threshold, _ = services.threshold_of(version)
        tracker = version.tracker
        keep_from = (
            job.min_score if job.min_score is not None else (threshold if threshold is not None else 0.0)
        )
        scorers.append(
            _Scorer(
                version=version,
                labels=list(version.labels),
                threshold=threshold,
                keep_from=float(keep_from),
                speaker=matching.speaker_key(tracker.speaker_filter),
                metadata=dict(tracker.metadata_filter or {}),
                counts=dict(previous.get(str(version.pk), {})),
            )
        )
    return scorers


def _results(
    scorer: _Scorer,
    out: np.ndarray,
    segment_ids: np.ndarray,
    job: ScoringJob,
    vectors: np.ndarray | None = None,
    encoder_id: str = "",
) -> tuple[list[ScoredSegment], np.ndarray, np.ndarray | None, np.ndarray]:
    """The rows to keep from one head's output columns, and what to count."""
    decided = matching.decide(out, scorer.labels, scorer.threshold, topic=scorer.topic)
    scores, matched = decided.scores, decided.matched
    # Every text scored, counted and announced (a live tracker may keep them), not only the rows kept.
    matches.count(scorer.version, "bulk", len(scores), int(matched.sum()))
    ids = segment_ids.tolist()
    matches.announce_scored(
        scorer.version,
        lambda: _texts_in_order(ids),
        scores.tolist(),
        list(decided.labels),
        matched.tolist(),
        source=job.source,
        vectors=(lambda: vectors) if vectors is not None else None,
        encoder_id=encoder_id,
    )
    labels = np.asarray(decided.labels, dtype=object) if scorer.topic else None
    keep = scores >= np.float32(scorer.keep_from)  # compared as a match is (a match is kept by default)
    if scorer.topic:
        keep &= matched
    rows = [
        ScoredSegment(
            job=job,
            version=scorer.version,
            segment_id=int(segment_ids[i]),
            score=float(scores[i]),
            label=decided.labels[i],
            match=bool(matched[i]),
        )
        for i in np.nonzero(keep)[0]
    ]
    return rows, scores, labels, matched


def _texts_in_order(ids: list[int]) -> list[str]:
    texts = dict(Segment.objects.filter(pk__in=ids).values_list("pk", "text"))
    return [texts[i] for i in ids]


def run_scoring(job: ScoringJob) -> dict[str, Any]:
    """The job's work: every segment with a vector, a chunk at a time, then whole documents."""
    dataset = job.dataset
    scorers = _scorers(job)
    segment_level = [s for s in scorers if s.version.tracker.granularity != Granularity.DOCUMENT]
    document_level = [s for s in scorers if s.version.tracker.granularity == Granularity.DOCUMENT]
    # Results past the checkpoint belong to a chunk whose transaction never committed: none exist,
    # but a document tracker's results are written at the end, after the last checkpoint.
    ScoredSegment.objects.filter(job=job, segment_id__gt=job.done_through).delete()
    ScoredSegment.objects.filter(job=job, version__tracker__granularity=Granularity.DOCUMENT).delete()
    for scorer in document_level:
        scorer.counts = {}  # counted again below, from every document
    encoder_id = dataset.encoder_id
    store = vector_store(dataset)
    stack = runtime.stack_of([s.version for s in segment_level], encoder_id) if segment_level else None
    groups = _document_groups(document_level)
    sums = {g: _Documents() for g in groups}
    metadata: dict[int, dict[str, Any]] = {}
    after = 0
    processed = job.processed
    work.heartbeat(job, message="scoring…")
    while True:
        rows = list(
            _segments(dataset, job.import_job)
            .filter(pk__gt=after)
            .order_by("pk")
            .values_list("pk", "vector_row", "document_id", "speaker", "text")[
                : settings.SCORING_CHUNK_SEGMENTS
            ]
        )
        if not rows:
            break
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        replay = int(ids[-1]) <= job.done_through  # scored before a takeover: documents only
        if not replay or groups:
            vectors = store.get([r[1] or 0 for r in rows])  # never None: filtered on vector_row
            speakers = [r[3] for r in rows]
            docs = [r[2] for r in rows]
            if any(s.metadata for s in scorers):
                missing = {d for d in docs if d not in metadata}
                metadata.update(Document.objects.filter(pk__in=missing).values_list("pk", "metadata"))
            meta = [metadata.get(d, {}) for d in docs]
            for key, members in groups.items():
                ok = np.flatnonzero(members[0].eligible(speakers, meta))
                at = sums[key].rows([docs[i] for i in ok], ids[ok], vectors.shape[1])
                matching.add_lines(sums[key].totals, at, vectors[ok])
            if not replay:
                results: list[ScoredSegment] = []
                token_ids = None
                if stack is not None and stack.reads_tokens:  # n-gram heads: the texts' token ids
                    token_ids = encoders.get_encoder(encoder_id).token_ids([r[4] for r in rows])
                outs = stack.scores(vectors, token_ids) if stack is not None else []
                for scorer, out in zip(segment_level, outs, strict=True):
                    ok = scorer.eligible(speakers, meta)
                    kept, scores, labels, matched = _results(
                        scorer, out[ok], ids[ok], job, vectors[ok], encoder_id
                    )
                    results.extend(kept)
                    scorer.count(scores, labels, matched)
                processed += len(rows)
                _checkpoint(job, results, int(ids[-1]), processed, scorers)
        after = int(ids[-1])
    results = []
    for key, members in groups.items():
        if not sums[key].documents:
            continue
        order = sorted(range(len(sums[key].documents)), key=sums[key].documents.__getitem__)
        vectors = matching.document_vectors(sums[key].totals[order])
        first = np.asarray(sums[key].first_line, dtype=np.int64)[order]
        doc_stack = runtime.stack_of([s.version for s in members], encoder_id)
        for scorer, out in zip(members, doc_stack.scores(vectors), strict=True):
            kept, scores, labels, matched = _results(scorer, out, first, job)
            results.extend(kept)
            scorer.count(scores, labels, matched)
    _checkpoint(job, results, job.done_through, processed, scorers, final=True)
    unscored = Segment.objects.filter(dataset=dataset, vector_row__isnull=True)
    if job.import_job is not None:  # only the import's own segments are this job's
        unscored = unscored.filter(document__imported_by_job=job.import_job)
    skipped = unscored.count()
    matches = sum(s.counts.get("matches", 0) for s in scorers)
    message = f"{matches:,} matches by {len(scorers)} tracker{'s' if len(scorers) != 1 else ''} in {processed:,} segments"
    if skipped:
        message += f"; {skipped:,} segments without a vector were not scored"
    return {"message": message[:500], "processed": processed}


class _Documents:
    """Running line sums of the documents a job has read, with each one's first kept line."""

    def __init__(self) -> None:
        self.totals = np.zeros((0, 0), dtype=np.float64)
        self.documents: list[int] = []
        self.first_line: list[int] = []
        self._row: dict[int, int] = {}

    def rows(self, documents: list[int], segment_ids: np.ndarray, dim: int) -> np.ndarray:
        """Each line's document row, adding rows for documents not seen before."""
        for d, segment in zip(documents, segment_ids.tolist(), strict=True):
            if d not in self._row:
                self._row[d] = len(self.documents)
                self.documents.append(d)
                self.first_line.append(int(segment))
        if len(self.documents) > len(self.totals):
            grown = np.zeros((max(len(self.documents), 2 * len(self.totals)), dim))
            if len(self.totals):
                grown[: len(self.totals)] = self.totals
            self.totals = grown
        return np.array([self._row[d] for d in documents], dtype=np.int64)


def _document_groups(scorers: list[_Scorer]) -> dict[tuple[Any, ...], list[_Scorer]]:
    """Document trackers with the same filters read the same lines: one mean vector per document."""
    groups: dict[tuple[Any, ...], list[_Scorer]] = {}
    for s in scorers:
        groups.setdefault((s.speaker, json.dumps(s.metadata, sort_keys=True)), []).append(s)
    return groups


def _checkpoint(
    job: ScoringJob,
    results: list[ScoredSegment],
    done_through: int,
    processed: int,
    scorers: list[_Scorer],
    *,
    final: bool = False,
) -> None:
    """A chunk's results, its alerts (the outbox) and the checkpoint, in one transaction."""
    result = {"trackers": {str(s.version.pk): s.counts for s in scorers}}
    with transaction.atomic():
        ScoredSegment.objects.bulk_create(results, batch_size=2000)
        _announce(job, results, scorers, final=final)
        job.done_through = done_through
        work.heartbeat(job, processed=processed, done_through=done_through, result=result)


def _announce(job: ScoringJob, results: list[ScoredSegment], scorers: list[_Scorer], *, final: bool) -> None:
    """The chunk's matches, for subscribers (alerts); once every segment is read, that too."""
    for scorer in scorers:
        mine = [r for r in results if r.version_id == scorer.version.pk and r.match]
        if mine:
            whole = scorer.version.tracker.granularity == Granularity.DOCUMENT
            matches.announce(
                scorer.version, functools.partial(_hits, mine, whole), source=job.source, stored=True
            )
    if final:
        matches.announce_job_scored(job, [s.version for s in scorers])


def _hits(rows: list[ScoredSegment], whole: bool) -> list[matches.Hit]:
    """Stored matches as subscribers see them (``whole``: a document tracker's, its document's)."""
    segments = Segment.objects.in_bulk([r.segment_id for r in rows])
    for r in rows:
        r.segment = segments[r.segment_id]
    return [matches.stored_hit(r, whole) for r in rows]


# --- Reading the results -------------------------------------------------------------------


def counts_of(job: ScoringJob) -> list[tuple[ModelVersion, dict[str, Any]]]:
    """Each of the job's versions with what it has counted so far (segments scored, matches, the
    score histogram, topics' labels), by tracker name."""
    counts = job.result.get("trackers", {})
    return [
        (
            v,
            {
                "scored": 0,
                "matches": 0,
                "histogram": [0] * BINS,
                "labels": None,
                **counts.get(str(v.pk), {}),
            },
        )
        for v in job.versions.select_related("tracker", "training_run").order_by("tracker__name")
    ]


def results_of(
    job: ScoringJob,
    *,
    tracker: Tracker | None = None,
    min_score: float | None = None,
    matches_only: bool = False,
) -> QuerySet[ScoredSegment]:
    qs = ScoredSegment.objects.filter(job=job).select_related(
        "version__tracker", "segment__document", "feedback_by"
    )
    if tracker is not None:
        qs = qs.filter(version__tracker=tracker)
    if min_score is not None:
        qs = qs.filter(score__gte=min_score)
    if matches_only:
        qs = qs.filter(match=True)
    return qs.order_by("-score", "id")


def with_context(results: list[ScoredSegment]) -> list[ScoredSegment]:
    """Each result with the lines before and after it in its document (``before``/``after``)."""
    wanted = Q()
    for r in results:
        seg = r.segment
        wanted |= Q(document_id=seg.document_id, position__in=[seg.position - 1, seg.position + 1])
    around = {}
    if results:
        around = {
            (s.document_id, s.position): s
            for s in Segment.objects.filter(wanted).only("document_id", "position", "speaker", "text")
        }
    for r in results:
        seg = r.segment
        r.before = around.get((seg.document_id, seg.position - 1))  # type: ignore[attr-defined]
        r.after = around.get((seg.document_id, seg.position + 1))  # type: ignore[attr-defined]
    return results


COLUMNS = [
    "tracker",
    "version",
    "score",
    "label",
    "match",
    "document",
    "external_id",
    "position",
    "speaker",
    "text",
    "feedback",
]


def _record(r: ScoredSegment) -> dict[str, Any]:
    seg = r.segment
    return {
        "tracker": r.version.tracker.name,
        "version": r.version.number,
        "score": round(r.score, 6),
        "label": r.label,
        "match": r.match,
        "document": seg.document.title,
        "external_id": seg.document.external_id,
        "position": seg.position,
        "speaker": seg.speaker,
        "text": seg.text,
        "feedback": r.feedback,
    }


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A cell a spreadsheet shows as text: one starting like a formula gets a leading apostrophe."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def csv_lines(results: QuerySet[ScoredSegment]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(COLUMNS)
    yield flush()
    for r in results.iterator(chunk_size=2000):
        record = _record(r)
        writer.writerow([spreadsheet_safe(record[c]) for c in COLUMNS])
        yield flush()


def jsonl_lines(results: QuerySet[ScoredSegment]) -> Iterator[str]:
    for r in results.iterator(chunk_size=2000):
        yield json.dumps(_record(r), ensure_ascii=False) + "\n"


# --- Feedback -------------------------------------------------------------------------------


class FeedbackRefused(errors.Invalid):
    """Feedback that cannot be recorded, and why."""


def give_feedback(result: ScoredSegment, user: User, verdict: str, label: str | None = None) -> ScoredSegment:
    """Mark a result right or wrong; the verdict becomes the user's answer for the tracker.

    A concept's right is 'yes' and its wrong 'no'. A topic's right is its label; a wrong one needs
    the right label. A segment of a dataset the tracker did not learn from brings that dataset into
    the tracker's pool, so that training can read the answer.
    """
    if verdict not in Feedback.values:
        raise FeedbackRefused(f"'{verdict}' is not a verdict; expected right or wrong")
    tracker = result.version.tracker
    if tracker.kind == TrackerKind.TOPIC:
        answer = result.label if verdict == Feedback.RIGHT else label
        if verdict == Feedback.WRONG and (not label or label == result.label):
            raise FeedbackRefused(
                f"say which label is right instead of '{result.label}': one of {', '.join(tracker.answers)}"
            )
    else:
        concept_answer = "yes" if result.match else "no"
        answer = concept_answer if verdict == Feedback.RIGHT else ("no" if result.match else "yes")
    segment = result.segment
    with transaction.atomic():
        if not tracker.datasets.filter(pk=segment.dataset_id).exists():
            tracker.datasets.add(segment.dataset_id)
        game.record_label(tracker, user, segment=segment, answer=str(answer), strategy=Strategy.FEEDBACK)
        result.feedback, result.feedback_by = verdict, user
        result.save(update_fields=["feedback", "feedback_by"])
    return result
