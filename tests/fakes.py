"""A deterministic, fast stand-in for the ONNX encoder: hashed bag of words, L2-normalised."""

from __future__ import annotations

import hashlib
import re

import numpy as np


class FakeEncoder:
    encoder_id = "fake-bag-of-words:64"
    dim = 64

    def __init__(self) -> None:
        self.calls: list[int] = []

    def _vector(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        for word in re.findall(r"[a-z0-9']+", text.lower()):
            h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
            v[h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        n = np.linalg.norm(v)
        return v / n if n else v

    def token_ids(self, texts) -> list[list[int]]:
        """Word ids as a WordPiece tokenizer's would be: the sentence markers around ids past 999."""
        out = []
        for text in texts:
            words = re.findall(r"[a-z0-9']+", text.lower())
            ids = [
                1000 + int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little") % 20000
                for w in words
            ]
            out.append([101, *ids, 102])
        return out

    def encode(self, texts, batch_size: int = 32) -> np.ndarray:
        self.calls.append(len(texts))
        if not len(texts):
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._vector(t) for t in texts])
