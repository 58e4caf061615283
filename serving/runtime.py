"""The serving path: texts embedded once, then every requested version's ONNX head applied.

Heads are loaded once per process and kept by their manifest's sha256, after ``open_version`` has
checked the manifest, every file and the encoder; a promotion is seen by the next request (the
live version is read from the database per request), and a request in flight keeps the head it
started with. onnxruntime and tokenizers only: this module never imports torch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from serving.ml import artifacts
from serving.ml.export import SCORES, VECTORS
from serving.models import ModelVersion
from trackers import encoders

MAX_HEADS = 512  # loaded heads kept per process


@dataclass(frozen=True)
class LoadedHead:
    manifest: dict[str, Any]
    session: ort.InferenceSession

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.session.run(
            [SCORES], {VECTORS: np.ascontiguousarray(vectors, dtype=np.float32)}
        )[0]
        return out


_heads: OrderedDict[str, LoadedHead] = OrderedDict()
_lock = threading.Lock()


def head_of(version: ModelVersion, encoder_id: str) -> LoadedHead:
    """The version's head, checked and loaded once per process."""
    key = f"{version.manifest_sha256}:{encoder_id}"
    with _lock:
        head = _heads.get(key)
        if head is not None:
            _heads.move_to_end(key)
            return head
    manifest = artifacts.open_version(Path(version.artifact_dir), version.manifest_sha256, encoder_id)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # a head is one small matrix product
    session = ort.InferenceSession(
        str(Path(version.artifact_dir) / artifacts.HEAD_FILE), options, providers=["CPUExecutionProvider"]
    )
    head = LoadedHead(manifest, session)
    with _lock:
        _heads[key] = head
        while len(_heads) > MAX_HEADS:
            _heads.popitem(last=False)
    return head


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
) -> list[Answer]:
    out = head.scores(vectors)
    labels: list[str] = head.manifest["labels"]
    if version.kind == "topic":
        best = out.argmax(axis=1)
        return [
            Answer(
                score=float(row[b]),
                label=labels[b],
                match=None,
                scores={name: float(p) for name, p in zip(labels, row, strict=True)},
            )
            for row, b in zip(out, best, strict=True)
        ]
    assert threshold is not None, "a concept version answers at a threshold"
    return [
        Answer(score=float(p), label="yes" if p >= threshold else "no", match=bool(p >= threshold))
        for p in out[:, 0]
    ]
