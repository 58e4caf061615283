"""Matches, announced by the paths that find them, for whoever subscribes (webhook alerts do).

The prediction API and bulk scoring decide matches (``serving.ml.matching``) and announce them
here; they do not know who listens. Receivers run in the announcing transaction, so what they
write (an alert's outbox rows) commits with the matches or not at all.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core import signing
from django.dispatch import Signal

from serving import traffic
from trackers import errors, metrics

if TYPE_CHECKING:
    import numpy as np

    from serving.hot import Snapshot
    from serving.models import ModelVersion, ScoredSegment, ScoringJob


@dataclass(frozen=True)
class Hit:
    """One match: a text (a segment, or a text sent to the API) or a whole document."""

    score: float
    label: str
    text: str | None = None
    segment_id: int | None = None
    position: int | None = None
    speaker: str = ""
    document_id: int | None = None


def stored_hit(result: ScoredSegment, whole: bool = False) -> Hit:
    """A stored scoring result as a match (``whole``: a document tracker's, its document's)."""
    segment = result.segment
    if whole:
        return Hit(score=result.score, label=result.label, document_id=segment.document_id)
    return Hit(
        score=result.score,
        label=result.label,
        text=segment.text,
        segment_id=segment.pk,
        position=segment.position,
        speaker=segment.speaker,
        document_id=segment.document_id,
    )


# version; hits (a function giving the matches, built only if a receiver asks); source (an
# EventSource); stored (the hits are stored segments of a scoring job, whose documents are complete
# only when ``job_scored`` is sent); document (the title of a call sent to the API, not stored);
# cache (the request's snapshot, for lookups kept under the access generation, or None)
found = Signal()
# job, versions: every segment of a scoring job has been read and its matches stored
job_scored = Signal()
# version, texts (a function giving them), scores, labels, matched (one item per text), source (an EventSource), cache
# (the request's snapshot or None), vectors (a function giving the texts' vectors, or None) and the
# encoder_id that made them: every text a live version scored, matched or not (keeping subscribes)
scored = Signal()


# --- prediction ids: what one result of a prediction response names, signed -----------------------

_signer = signing.Signer(salt="trackers.prediction-id", sep=".")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def prediction_id(version: ModelVersion, text: str, matched: bool, label: str = "") -> str:
    """The id a prediction response gives one text's result."""
    return _signer.sign(f"p{version.pk}-{int(matched)}-{digest(text)}-{label}")


@dataclass(frozen=True)
class Said:
    """What a prediction id names."""

    version_id: int
    matched: bool
    digest: str
    label: str


def read_prediction_id(value: str) -> Said:
    try:
        plain = _signer.unsign(value)
        version, matched, hashed, label = plain[1:].split("-", 3)
        return Said(int(version), matched == "1", hashed, label)
    except (signing.BadSignature, ValueError) as exc:
        raise errors.NotFound("no prediction has this id") from exc


_counters: dict[tuple[int, str], tuple[Any, Any]] = {}


def count(version: ModelVersion, path: str, texts: int, matched: int, seconds: float | None = None) -> None:
    """Count texts scored and matched by ``version``'s tracker through ``path`` (predict, many, bulk),
    answered in ``seconds`` (a request's): memory writes (Prometheus' counters, ``serving.traffic``),
    nothing on the request's path waits for them. A tracker's counters are made once per process
    (its code, their label, read then), so a request with a hundred trackers makes no query here."""
    traffic.record(version.tracker_id, texts, matched, seconds)
    key = (version.tracker_id, path)
    children = _counters.get(key)
    if children is None:
        children = _counters[key] = metrics.counters_for(str(version.tracker.code), path)
    children[0].inc(texts)
    if matched:
        children[1].inc(matched)


def announce(
    version: ModelVersion,
    hits: Callable[[], list[Hit]],
    *,
    source: str,
    stored: bool = False,
    document: dict[str, Any] | None = None,
    cache: Snapshot | None = None,
) -> None:
    """Tell subscribers about the matches of ``version`` found through ``source``."""
    found.send(
        sender=type(version),
        version=version,
        hits=functools.cache(hits),
        source=source,
        stored=stored,
        document=document,
        cache=cache,
    )


def announce_scored(
    version: ModelVersion,
    texts: Callable[[], list[str]],
    scores: list[float],
    labels: list[str],
    matched: list[bool],
    *,
    source: str,
    cache: Snapshot | None = None,
    vectors: Callable[[], np.ndarray] | None = None,
    encoder_id: str = "",
) -> None:
    """Tell subscribers every text ``version`` scored through ``source``, with its score and verdict
    (``texts`` gives the texts and ``vectors`` their vectors, read only if a receiver needs them)."""
    scored.send(
        sender=type(version),
        version=version,
        texts=texts,
        scores=scores,
        labels=labels,
        matched=matched,
        source=source,
        cache=cache,
        vectors=vectors,
        encoder_id=encoder_id,
    )


def announce_job_scored(job: ScoringJob, versions: list[ModelVersion]) -> None:
    """Tell subscribers that every segment of ``job`` has been read and its matches stored."""
    job_scored.send(sender=type(job), job=job, versions=versions)
