"""The serving path: texts embedded once, then every requested version's ONNX head applied, many
heads in one pass (their weights stacked into one graph).

Heads are loaded once per process and kept by their manifest's sha256, after ``open_version`` has
checked the manifest, every file and the encoder; a promotion is seen by the next request (the
live version is kept only while the access generation holds, see ``serving.hot``), and a request in
flight keeps the head it started with. onnxruntime and tokenizers only: this module never imports torch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from serving.ml import artifacts, matching
from serving.ml.export import SCORES, VECTORS, head_parts, stacked_model
from serving.models import ModelVersion
from trackers import encoders

MAX_HEADS = 512  # loaded heads kept per process
MAX_STACKS = 64  # stacked sets of heads kept per process


@dataclass(frozen=True)
class LoadedHead:
    """A version's head: its ONNX graph's weights, applied as the graph applies them (a product,
    then a sigmoid or a softmax). ``head_of`` has checked that onnxruntime's answers agree.

    Scores are computed in float64 and rounded to float32, here and in the stacked graphs: a float32
    product sums in an order that depends on the batch's size (numpy takes a dot product for one row,
    a matrix-vector product for more), which moved a text's score by a unit in the last place with
    its batch-mates; in float64 those differences are far below float32's resolution, so a text
    scores the same alone, in any batch, and through one head or a stack of them.
    """

    manifest: dict[str, Any]
    parts: tuple[np.ndarray, np.ndarray, bool]  # float64 weights, intercepts, softmax: also for stacking

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        weights, intercepts, softmax = self.parts
        logits = np.asarray(vectors, dtype=np.float64) @ weights + intercepts
        if softmax:
            exp = np.exp(logits - logits.max(axis=1, keepdims=True))
            out: np.ndarray = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
        else:
            out = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        return out


def _run(session: ort.InferenceSession, vectors: np.ndarray) -> np.ndarray:
    out: np.ndarray = session.run([SCORES], {VECTORS: np.ascontiguousarray(vectors, dtype=np.float32)})[0]
    return out


def _session(model: bytes | str, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # heads are small matrix products
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


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
    """The version's head, checked and loaded once per process."""
    key = f"{version.manifest_sha256}:{encoder_id}"
    head: LoadedHead | None = _cached(_heads, key)
    if head is not None:
        return head
    manifest = artifacts.open_version(Path(version.artifact_dir), version.manifest_sha256, encoder_id)
    model = onnx.load(str(Path(version.artifact_dir) / artifacts.HEAD_FILE))
    weights, intercepts, softmax = head_parts(model)
    head = LoadedHead(manifest, (weights.astype(np.float64), intercepts.astype(np.float64), softmax))
    probe = np.random.default_rng(0).standard_normal((4, head.parts[0].shape[0])).astype(np.float32)
    expected = _run(_session(model.SerializeToString()), probe)
    if not np.allclose(head.scores(probe), expected, atol=1e-5):
        raise artifacts.ArtifactMismatch(
            f"{version.artifact_dir}: the head's graph is not a product and a sigmoid or softmax"
        )
    _keep(_heads, key, head, MAX_HEADS)
    return head


@dataclass(frozen=True)
class Stack:
    """Many versions' heads as one ONNX graph: one pass gives every head's columns."""

    session: ort.InferenceSession
    columns: tuple[slice, ...]  # each version's columns of the output, in the given order
    heads: tuple[LoadedHead, ...]

    def matrix(self, vectors: np.ndarray) -> np.ndarray:
        """Every head's columns side by side, in the stack's order."""
        return _run(self.session, vectors)

    def scores(self, vectors: np.ndarray) -> list[np.ndarray]:
        out = self.matrix(vectors)
        return [out[:, c] for c in self.columns]


def stack_of(versions: Sequence[ModelVersion], encoder_id: str, threads: int = 1) -> Stack:
    """The versions' heads stacked into one graph, built once per process for each set of versions
    (a promotion changes the set, and the next request builds the new one)."""
    key = (*(v.manifest_sha256 for v in versions), encoder_id, str(threads))
    stack: Stack | None = _cached(_stacks, key)
    if stack is not None:
        return stack
    heads = tuple(head_of(v, encoder_id) for v in versions)
    model = stacked_model([h.parts for h in heads])
    columns, start = [], 0
    for h in heads:
        width = h.parts[0].shape[1]
        columns.append(slice(start, start + width))
        start += width
    stack = Stack(_session(model.SerializeToString(), threads), tuple(columns), heads)
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
    version: ModelVersion, head: LoadedHead, vectors: np.ndarray, threshold: float | None
) -> tuple[list[Answer], matching.Decisions]:
    """One version's answers for texts, and its decisions (which of them are matches)."""
    return answers_from(version, head.manifest["labels"], head.scores(vectors), threshold)


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
