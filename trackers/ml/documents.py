"""Which lines a speaker filter keeps, and a document's vector from its lines: one rule for the
game's pool, training, and every serving path (``serving.ml.matching``). Pure numpy."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def speaker_key(speaker: str) -> str:
    """A speaker as filters compare it: without surrounding space, case-folded ("Customer " and
    "CUSTOMER" are one speaker)."""
    return speaker.strip().casefold()


def same_speaker(speaker: str | None, wanted: str) -> bool:
    """Whether a line of ``speaker`` passes a filter on ``wanted`` (empty: every line). A text whose
    speaker is unknown (``None``: a loose text sent to the API) is not filtered out."""
    return not wanted or speaker is None or speaker_key(speaker) == speaker_key(wanted)


def speakers_of(speakers: Iterable[str], wanted: str) -> list[str]:
    """The distinct spellings among ``speakers`` that a filter on ``wanted`` keeps."""
    return sorted({s for s in speakers if same_speaker(s, wanted)})


def add_lines(sums: np.ndarray, member_of: np.ndarray, vectors: np.ndarray) -> None:
    """Add lines to their documents' running sums (float64, in place), one line after another in
    the order given: lines read in chunks add up exactly as lines read at once."""
    np.add.at(sums, np.asarray(member_of, dtype=np.int64), np.asarray(vectors, dtype=np.float64))


def line_sums(vectors: np.ndarray, member_of: np.ndarray, n_documents: int) -> np.ndarray:
    """Each document's lines added up (``add_lines`` from zero)."""
    sums = np.zeros((n_documents, vectors.shape[1]), dtype=np.float64)
    add_lines(sums, member_of, vectors)
    return sums


def document_vectors(sums: np.ndarray) -> np.ndarray:
    """Documents' vectors from their line sums: the normalised mean, as float32 (what a head reads)."""
    sums = np.atleast_2d(np.asarray(sums, dtype=np.float64))
    norms = np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    vectors: np.ndarray = (sums / norms).astype(np.float32)
    return vectors
