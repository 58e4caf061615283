"""The rule for a match. Every path that decides one calls this module: a prediction with one
tracker, the many-trackers endpoint, bulk scoring and the alerts they send.

- A concept's text matches when its score (float32, as every head answers) is at or above the
  threshold in use, compared as float32.
- A topic's text is its most likely label, and matches unless that label is "none".
- A speaker filter keeps the lines whose speaker is the same after case-folding
  (``trackers.ml.documents.same_speaker``; a loose text, whose speaker is unknown, is kept).
- A document's vector is the normalised sum of its kept lines, added in float64 in line order
  (``trackers.ml.documents``, which the game's pool uses too).

Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trackers.ml.documents import add_lines, document_vectors, line_sums, same_speaker, speaker_key

__all__ = [
    "NO_TOPIC",
    "Decisions",
    "add_lines",
    "concept_matches",
    "decide",
    "document_vector",
    "document_vectors",
    "line_sums",
    "same_speaker",
    "speaker_key",
]

NO_TOPIC = "none"  # a topic tracker's label for texts of none of its topics: never a match


def concept_matches(scores: np.ndarray, thresholds: np.ndarray | float) -> np.ndarray:
    """Concept scores against their thresholds (one, or one per column), both as float32."""
    return np.asarray(scores, dtype=np.float32) >= np.asarray(thresholds, dtype=np.float32)


@dataclass(frozen=True)
class Decisions:
    """One head's answers for n texts."""

    scores: np.ndarray  # float32: P(yes) for a concept; the most likely label's probability for a topic
    labels: list[str]  # "yes" / "no", or the most likely label
    matched: np.ndarray  # bool


def decide(out: np.ndarray, labels: Sequence[str], threshold: float | None, *, topic: bool) -> Decisions:
    """A head's output columns (n × 1 for a concept, n × labels for a topic) as decisions."""
    out = np.asarray(out, dtype=np.float32)
    if topic:
        best = out.argmax(axis=1) if len(out) else np.zeros(0, dtype=np.int64)
        names = [labels[b] for b in best.tolist()]
        return Decisions(
            scores=out[np.arange(len(out)), best],
            labels=names,
            matched=np.array([n != NO_TOPIC for n in names], dtype=bool),
        )
    if threshold is None:
        raise ValueError("a concept decides at a threshold")
    scores = out[:, 0]
    matched = concept_matches(scores, threshold)
    return Decisions(scores=scores, labels=["yes" if m else "no" for m in matched.tolist()], matched=matched)


def document_vector(lines: np.ndarray) -> np.ndarray:
    """One document's vector (1 × d) from its kept lines' vectors, in line order."""
    lines = np.atleast_2d(lines)
    return document_vectors(line_sums(lines, np.zeros(len(lines), dtype=np.int64), 1))
