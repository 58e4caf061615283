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

from serving.ml.export import SCORES, TOKENS, VECTORS, head_ngrams, head_parts
from trackers.ml.ngrams import Ngrams

# weights (features, outputs), intercepts (outputs,), softmax, and the token n-grams the features
# end with (None: the sentence vector alone)
Parts = tuple[np.ndarray, np.ndarray, bool, Ngrams | None]


def parts_of(head: onnx.ModelProto) -> Parts:
    weights, bias, softmax = head_parts(head)
    return weights, bias, softmax, head_ngrams(head)


@dataclass(frozen=True)
class TokenTerm:
    """One head's token n-gram part: its columns, vocabulary and weights for those features."""

    columns: slice
    ngrams: Ngrams
    index: dict[tuple[int, ...], int]
    weights: np.ndarray  # float64 (n-grams, outputs)


@dataclass(frozen=True)
class Heads:
    """Heads side by side: one product with every head's sentence-vector weights, each n-gram head's
    own product with its texts' n-gram features, then each head's sigmoid or softmax."""

    weights: np.ndarray  # float64 (dim, columns)
    intercepts: np.ndarray  # float64 (columns,)
    runs: tuple[tuple[slice, bool], ...]  # neighbouring columns that share one activation (softmax?)
    columns: tuple[slice, ...]  # each head's columns, in the given order
    tokens: tuple[TokenTerm, ...] = ()

    @property
    def reads_tokens(self) -> bool:
        return bool(self.tokens)

    @classmethod
    def of(cls, parts: Sequence[Parts]) -> Heads:
        if not parts:
            raise ValueError("no heads")
        dims = {w.shape[0] - (len(ng) if ng is not None else 0) for w, _, _, ng in parts}
        if len(dims) != 1:
            raise ValueError(f"heads of different input sizes cannot be stacked: {sorted(dims)}")
        (dim,) = dims
        columns: list[slice] = []
        runs: list[tuple[slice, bool]] = []
        tokens: list[TokenTerm] = []
        start = 0
        for w, _, softmax, ngrams in parts:
            width = w.shape[1]
            columns.append(slice(start, start + width))
            if runs and not softmax and not runs[-1][1]:  # concepts share one sigmoid
                runs[-1] = (slice(runs[-1][0].start, start + width), False)
            else:
                runs.append((slice(start, start + width), softmax))
            if ngrams is not None:
                term = np.asarray(w[dim:], dtype=np.float64)
                tokens.append(TokenTerm(columns[-1], ngrams, ngrams.index(), term))
            start += width
        return cls(
            weights=np.hstack([np.asarray(w[:dim], dtype=np.float64) for w, _, _, _ in parts]),
            intercepts=np.concatenate([np.asarray(b, dtype=np.float64).reshape(-1) for _, b, _, _ in parts]),
            runs=tuple(runs),
            columns=tuple(columns),
            tokens=tuple(tokens),
        )

    def apply(self, vectors: np.ndarray, token_ids: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        """Every head's scores for ``vectors`` (n, dim), side by side: float32 (n, columns).
        ``token_ids``: the texts' token ids, which heads that read n-grams need."""
        logits = np.asarray(vectors, dtype=np.float64) @ self.weights + self.intercepts
        if self.tokens:
            if token_ids is None or len(token_ids) != logits.shape[0]:
                raise ValueError("these heads read token n-grams: give every text's token ids")
            for term in self.tokens:
                features = term.ngrams.features(token_ids, term.index).astype(np.float64)
                logits[:, term.columns] += features @ term.weights
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
    parts = parts_of(head)
    ngrams = parts[3]
    rng = np.random.default_rng(0)
    dim = parts[0].shape[0] - (len(ngrams) if ngrams is not None else 0)
    probe = rng.standard_normal((8, dim)).astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(head.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds: dict[str, np.ndarray] = {VECTORS: probe}
    ids = None
    if ngrams is not None:  # token ids with the vocabulary's words, padded as a batch is
        words = np.concatenate([ngrams.unigrams, ngrams.bigrams.reshape(-1)]) if len(ngrams) else np.zeros(1)
        ids = [[101, *rng.choice(words, int(rng.integers(0, 12))).tolist(), 102] for _ in range(8)]
        padded = np.zeros((8, max(len(i) for i in ids)), dtype=np.int64)
        for row, i in enumerate(ids):
            padded[row, : len(i)] = i
        feeds[TOKENS] = padded
    expected = session.run([SCORES], feeds)[0]
    if not np.allclose(Heads.of([parts]).apply(probe, ids), expected, atol=atol):
        raise ValueError(
            "the head's graph does not answer as its weights do (a product, then a sigmoid or softmax)"
        )
