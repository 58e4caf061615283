"""The one engine that applies heads: numpy, in float64, rounded to float32.

A version's ONNX file stays its artifact and its download; the serving path applies the same
weights here (``Heads``), one head or many stacked side by side, and ``check_graph`` proves once,
when a version is published, that onnxruntime running the file answers as this does.

Scores are computed in float64 and rounded to float32: a float32 product sums in an order that
depends on the batch's size and on the heads beside it, which moved a text's score by a unit in the
last place; in float64 those differences are far below float32's resolution, so a text scores the
same alone, in any batch, and through one head or a stack of them. Pure numpy (and onnxruntime for
the check).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from serving.ml.export import SCORES, VECTORS, head_parts

Parts = tuple[np.ndarray, np.ndarray, bool]  # weights (dim, outputs), intercepts (outputs,), softmax


@dataclass(frozen=True)
class Heads:
    """Heads side by side: one product with every weight, then each head's sigmoid or softmax."""

    weights: np.ndarray  # float64 (dim, columns)
    intercepts: np.ndarray  # float64 (columns,)
    runs: tuple[tuple[slice, bool], ...]  # neighbouring columns that share one activation (softmax?)
    columns: tuple[slice, ...]  # each head's columns, in the given order

    @classmethod
    def of(cls, parts: Sequence[Parts]) -> Heads:
        if not parts:
            raise ValueError("no heads")
        dims = {w.shape[0] for w, _, _ in parts}
        if len(dims) != 1:
            raise ValueError(f"heads of different input sizes cannot be stacked: {sorted(dims)}")
        columns: list[slice] = []
        runs: list[tuple[slice, bool]] = []
        start = 0
        for w, _, softmax in parts:
            width = w.shape[1]
            columns.append(slice(start, start + width))
            if runs and not softmax and not runs[-1][1]:  # concepts share one sigmoid
                runs[-1] = (slice(runs[-1][0].start, start + width), False)
            else:
                runs.append((slice(start, start + width), softmax))
            start += width
        return cls(
            weights=np.hstack([np.asarray(w, dtype=np.float64) for w, _, _ in parts]),
            intercepts=np.concatenate([np.asarray(b, dtype=np.float64).reshape(-1) for _, b, _ in parts]),
            runs=tuple(runs),
            columns=tuple(columns),
        )

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Every head's scores for ``vectors`` (n, dim), side by side: float32 (n, columns)."""
        logits = np.asarray(vectors, dtype=np.float64) @ self.weights + self.intercepts
        out = np.empty(logits.shape, dtype=np.float32)
        for cols, softmax in self.runs:
            z = logits[:, cols]
            if softmax:
                exp = np.exp(z - z.max(axis=1, keepdims=True))
                out[:, cols] = exp / exp.sum(axis=1, keepdims=True)
            else:
                out[:, cols] = 1.0 / (1.0 + np.exp(-z))
        return out


def check_graph(head: onnx.ModelProto, atol: float = 1e-5) -> None:
    """Raise ValueError unless onnxruntime running ``head`` answers as ``Heads`` does on a probe."""
    parts = head_parts(head)
    probe = np.random.default_rng(0).standard_normal((8, parts[0].shape[0])).astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(head.SerializeToString(), options, providers=["CPUExecutionProvider"])
    expected = session.run([SCORES], {VECTORS: probe})[0]
    if not np.allclose(Heads.of([parts]).apply(probe), expected, atol=atol):
        raise ValueError(
            "the head's graph does not answer as its weights do (a product, then a sigmoid or softmax)"
        )
