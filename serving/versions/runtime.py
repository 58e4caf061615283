"""The serving path: texts embedded once, then every requested version's head applied, many heads
in one pass (their weights side by side, ``serving.ml.heads``: one engine for every path).

Heads are loaded once per process and kept by their manifest's sha256, after ``open_version`` has
checked the manifest, every file and the encoder; a promotion is seen by the next request (the
live version is kept only while the access generation holds, see ``serving.hot``), and a request in
flight keeps the head it started with. numpy, onnx and tokenizers only: this module never imports torch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from serving.ml import artifacts, heads, matching
from serving.models import ModelVersion
from trackers import encoders

MAX_HEADS = 512  # loaded heads kept per process
MAX_STACKS = 64  # stacked sets of heads kept per process


@dataclass(frozen=True)
class LoadedHead:
    """A version's head: its ONNX graph's weights, applied by ``serving.ml.heads`` (checked against
    onnxruntime when the version was published)."""

    manifest: dict[str, Any]
    parts: heads.Parts
    engine: heads.Heads

    def scores(self, vectors: np.ndarray, token_ids: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        return self.engine.apply(vectors, token_ids)


_heads: OrderedDict[str, LoadedHead] = OrderedDict()
_stacks: OrderedDict[tuple[str, ...], Stack] = OrderedDict()
_lock = threading.Lock()


def _cached(cache: OrderedDict[Any, Any], key: Any) -> Any:
    with _lock:
        value = cache.get(key)
        if value is not None:
            cache.move_to_end(key)
        return value


def _keep(cache: OrderedDict[Any, Any], key: Any, value: Any, limit: int) -> None:
    with _lock:
        cache[key] = value
        while len(cache) > limit:
            cache.popitem(last=False)


def head_of(version: ModelVersion, encoder_id: str) -> LoadedHead:
    """The version's head, checked (manifest, files, encoder) and loaded once per process."""
    key = f"{version.manifest_sha256}:{encoder_id}"
    head: LoadedHead | None = _cached(_heads, key)
    if head is not None:
        return head
    directory = version.directory()
    manifest = artifacts.open_version(directory, version.manifest_sha256, encoder_id)
    parts = heads.parts_of(onnx.load(str(directory / artifacts.HEAD_FILE)))
    head = LoadedHead(manifest, parts, heads.Heads.of([parts]))
    _keep(_heads, key, head, MAX_HEADS)
    return head


@dataclass(frozen=True)
class Stack:
    """Many versions' heads side by side: one product gives every head's columns."""

    engine: heads.Heads
    heads: tuple[LoadedHead, ...]

    @property
    def columns(self) -> tuple[slice, ...]:
        return self.engine.columns

    @property
    def reads_tokens(self) -> bool:
        return self.engine.reads_tokens

    def matrix(self, vectors: np.ndarray, token_ids: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        """Every head's columns side by side, in the stack's order."""
        return self.engine.apply(vectors, token_ids)

    def scores(
        self, vectors: np.ndarray, token_ids: Sequence[Sequence[int]] | None = None
    ) -> list[np.ndarray]:
        out = self.matrix(vectors, token_ids)
        return [out[:, c] for c in self.columns]


def stack_of(versions: Sequence[ModelVersion], encoder_id: str) -> Stack:
    """The versions' heads stacked, built once per process for each set of versions (a promotion
    changes the set, and the next request builds the new one)."""
    key = (*(v.manifest_sha256 for v in versions), encoder_id)
    stack: Stack | None = _cached(_stacks, key)
    if stack is not None:
        return stack
    loaded = tuple(head_of(v, encoder_id) for v in versions)
    stack = Stack(heads.Heads.of([h.parts for h in loaded]), loaded)
    _keep(_stacks, key, stack, MAX_STACKS)
    return stack


def embed(texts: Sequence[str], encoder_id: str | None) -> tuple[np.ndarray, str]:
    """The texts' sentence vectors, by the encoder that made the heads' training vectors."""
    encoder = encoders.get_encoder(encoder_id)
    return np.asarray(encoder.encode(list(texts)), dtype=np.float32), encoder.encoder_id


@dataclass
class Answer:
    """One version's answer for one text."""

    score: float  # P(yes) for concepts; the winning label's probability for topics
    label: str
    match: bool | None  # concepts: score at or above the threshold in use
    scores: dict[str, float] | None = None  # topics: every label's probability


def answers(
    version: ModelVersion,
    head: LoadedHead,
    vectors: np.ndarray,
    threshold: float | None,
    token_ids: Sequence[Sequence[int]] | None = None,
) -> tuple[list[Answer], matching.Decisions]:
    """One version's answers for texts, and its decisions (which of them are matches)."""
    return answers_from(version, head.manifest["labels"], head.scores(vectors, token_ids), threshold)


def answers_from(
    version: ModelVersion, labels: list[str], out: np.ndarray, threshold: float | None
) -> tuple[list[Answer], matching.Decisions]:
    """Answers from a head's output columns (one head's, or its slice of a stack's)."""
    topic = version.kind == "topic"
    decided = matching.decide(out, labels, threshold, topic=topic)
    if topic:
        return [
            Answer(
                score=float(score),
                label=label,
                match=None,
                scores={name: float(p) for name, p in zip(labels, row, strict=True)},
            )
            for row, score, label in zip(out, decided.scores.tolist(), decided.labels, strict=True)
        ], decided
    return [
        Answer(score, label, match)
        for score, label, match in zip(
            decided.scores.tolist(), decided.labels, decided.matched.tolist(), strict=True
        )
    ], decided
