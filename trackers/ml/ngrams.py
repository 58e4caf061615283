"""Token n-grams: words and word pairs of the encoder's own token ids, as TF-IDF features.

A sentence vector says what a text is about; some concepts live in its surface ("FREE", "txt",
"£1000", "call now"), which the vector blurs. These features are the token ids the encoder already
reads (``OnnxEncoder.token_ids``: its tokenizer, its truncation), so that one ONNX file can compute
them from the ``input_ids`` it is given, with ONNX's ``TfIdfVectorizer`` (``serving.ml.export``):

- the vocabulary: every token id and every pair of neighbouring ids that occurs in at least
  ``MIN_DF`` of the pool's texts, the ``MAX_NGRAMS`` most frequent, never a special id (padding,
  the sentence markers), so padding and the markers never count;
- a text's features: for each n-gram of the vocabulary present in it (once, however often), its
  inverse document frequency ln((1 + n) / (1 + df)) + 1 over the pool; the row then scaled to unit
  length (a text with none of them is all zeros).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

MIN_DF = 2
MAX_NGRAMS = 20_000
# The shipped tokenizer's special ids (BERT WordPiece): [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102,
# [MASK] 103. Ids below 999 are these and unused slots.
FIRST_WORD_ID = 999

Ids = Sequence[int]


def _grams(ids: Ids) -> set[tuple[int, ...]]:
    words = [i for i in ids if i >= FIRST_WORD_ID]
    pairs = {
        (a, b) for a, b in zip(ids[:-1], ids[1:], strict=False) if a >= FIRST_WORD_ID and b >= FIRST_WORD_ID
    }
    return {(w,) for w in words} | pairs


@dataclass(frozen=True)
class Ngrams:
    """A vocabulary of token n-grams and their weights: ``unigrams`` (u,), then ``bigrams`` (b, 2),
    one weight (inverse document frequency) per n-gram in that order."""

    unigrams: np.ndarray  # int64 (u,)
    bigrams: np.ndarray  # int64 (b, 2)
    idf: np.ndarray  # float32 (u + b,)

    def __len__(self) -> int:
        return len(self.idf)

    @classmethod
    def build(
        cls, texts: Sequence[Ids], *, min_df: int = MIN_DF, max_size: int = MAX_NGRAMS
    ) -> Ngrams | None:
        """The vocabulary of ``texts`` (token ids each); None when no n-gram is frequent enough."""
        df: Counter[tuple[int, ...]] = Counter()
        for ids in texts:
            df.update(_grams(ids))
        frequent = [(g, n) for g, n in df.items() if n >= min_df]
        if not frequent:
            return None
        frequent.sort(key=lambda gn: (-gn[1], gn[0]))
        kept = sorted(g for g, _ in frequent[:max_size])
        uni = [g for g in kept if len(g) == 1]
        bi = [g for g in kept if len(g) == 2]
        counts = np.asarray([df[g] for g in [*uni, *bi]], dtype=np.float64)
        idf = np.log((1 + len(texts)) / (1 + counts)) + 1
        return cls(
            np.asarray([g[0] for g in uni], dtype=np.int64),
            np.asarray(bi, dtype=np.int64).reshape(-1, 2),
            idf.astype(np.float32),
        )

    def index(self) -> dict[tuple[int, ...], int]:
        grams = [(int(u),) for u in self.unigrams] + [(int(a), int(b)) for a, b in self.bigrams]
        return {g: i for i, g in enumerate(grams)}

    def features(
        self, texts: Sequence[Ids], index: dict[tuple[int, ...], int] | None = None
    ) -> sparse.csr_matrix:
        """(texts, n-grams) float32: each present n-gram's weight, rows scaled to unit length."""
        index = index if index is not None else self.index()
        rows: list[int] = []
        cols: list[int] = []
        for r, ids in enumerate(texts):
            found = sorted(index[g] for g in _grams(ids) if g in index)
            rows += [r] * len(found)
            cols += found
        values = self.idf[cols].astype(np.float64)
        matrix = sparse.csr_matrix((values, (rows, cols)), shape=(len(texts), len(self)))
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
        scale = sparse.diags(1.0 / np.maximum(norms, 1e-12))
        out: sparse.csr_matrix = (scale @ matrix).astype(np.float32).tocsr()
        return out

    def arrays(self, prefix: str = "ngram_") -> dict[str, np.ndarray]:
        return {
            f"{prefix}unigrams": self.unigrams,
            f"{prefix}bigrams": self.bigrams,
            f"{prefix}idf": self.idf,
        }

    @classmethod
    def from_arrays(
        cls, z: dict[str, np.ndarray] | np.lib.npyio.NpzFile, prefix: str = "ngram_"
    ) -> Ngrams | None:
        if f"{prefix}idf" not in z:
            return None
        return cls(
            np.asarray(z[f"{prefix}unigrams"], dtype=np.int64),
            np.asarray(z[f"{prefix}bigrams"], dtype=np.int64).reshape(-1, 2),
            np.asarray(z[f"{prefix}idf"], dtype=np.float32),
        )
