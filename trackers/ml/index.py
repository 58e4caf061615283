"""FAISS inner-product indexes over L2-normalised vectors: build, save atomically, load, search."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import faiss
import numpy as np

from trackers.ml.storage import write_atomic

KINDS = ("flat", "hnsw", "ivf")
HNSW_M = 32


def choose_kind(n: int, setting: str = "auto", flat_max: int = 200_000) -> str:
    """``auto`` keeps an exact flat index up to ``flat_max`` vectors and uses HNSW above."""
    if setting in KINDS:
        return setting
    if setting != "auto":
        raise ValueError(f"unknown index kind {setting!r}; expected auto, flat, hnsw or ivf")
    return "flat" if n <= flat_max else "hnsw"


def build(vectors: np.ndarray, kind: str = "flat", *, seed: int = 0) -> faiss.Index:
    """An index whose ids are the row numbers of ``vectors``."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    index: faiss.Index
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 64
    elif kind == "ivf":
        nlist = max(1, min(int(4 * math.sqrt(max(n, 1))), n // 39 or 1))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = vectors[rng.choice(n, size=min(n, nlist * 256), replace=False)] if n else vectors
        index.train(sample)
        index.nprobe = min(nlist, max(16, nlist // 16))
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    if n:
        index.add(vectors)
    return index


def save(index: faiss.Index, path: Path) -> None:
    """Write to a temporary file beside ``path`` and rename it into place."""
    write_atomic(Path(path), lambda tmp: faiss.write_index(index, tmp))


_cache: dict[tuple[str, int, int], faiss.Index] = {}
_lock = threading.Lock()


def load(path: Path) -> faiss.Index:
    """One loaded index per file version per process."""
    path = Path(path)
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    with _lock:
        index = _cache.get(key)
        if index is None:
            for old in [k for k in _cache if k[0] == key[0]]:
                del _cache[old]
            index = _cache[key] = faiss.read_index(str(path))
        return index


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows) of the ``k`` nearest rows for each query; missing hits are row -1."""
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    k = max(1, min(k, index.ntotal)) if index.ntotal else 1
    return index.search(queries, k)
