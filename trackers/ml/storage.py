"""Crash-safe files: write beside, fsync, rename into place. Append-only vector store."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, writer: Callable[[str], object]) -> None:
    """Call ``writer(tmp_path)``, fsync the result and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2)))


class VectorStoreMismatch(ValueError):
    """Vectors of another encoder or dimension cannot join this store."""


class VectorStore:
    """A dataset's vectors as float32 chunk files plus a manifest; rows are append-only.

    A chunk is written and fsynced before the manifest names it, so a crash leaves at worst an
    unnamed chunk file, never a manifest pointing at missing or partial data.
    """

    MANIFEST = "manifest.json"

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def manifest(self) -> dict[str, Any]:
        path = self.root / self.MANIFEST
        if not path.exists():
            return {"encoder_id": "", "dim": 0, "rows": 0, "chunks": []}
        manifest: dict[str, Any] = json.loads(path.read_text())
        return manifest

    @property
    def rows(self) -> int:
        return int(self.manifest()["rows"])

    def append(self, vectors: np.ndarray, encoder_id: str) -> int:
        """Store ``vectors`` and return the row number of the first one."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError("vectors must be a 2-d array")
        m = self.manifest()
        if m["rows"] and (m["encoder_id"] != encoder_id or m["dim"] != vectors.shape[1]):
            raise VectorStoreMismatch(
                f"store holds {m['dim']}-d vectors of {m['encoder_id']}; got {vectors.shape[1]}-d of {encoder_id}"
            )
        start = int(m["rows"])
        name = f"chunk-{start:010d}-{len(vectors)}.npy"

        def save(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.save(fh, vectors)

        write_atomic(self.root / name, save)
        m.update(
            encoder_id=encoder_id,
            dim=int(vectors.shape[1]),
            rows=start + len(vectors),
            chunks=[*m["chunks"], {"file": name, "start": start, "rows": len(vectors)}],
        )
        write_json_atomic(self.root / self.MANIFEST, m)
        return start

    def load(self) -> np.ndarray:
        """All rows as one float32 matrix (chunks are memory-mapped while joining)."""
        m = self.manifest()
        if not m["chunks"]:
            return np.zeros((0, m["dim"] or 0), dtype=np.float32)
        parts = [np.load(self.root / c["file"], mmap_mode="r") for c in m["chunks"]]
        return np.concatenate(parts, axis=0)

    def get(self, rows: np.ndarray | list[int]) -> np.ndarray:
        """Selected rows without loading the whole store."""
        m = self.manifest()
        rows = np.asarray(rows, dtype=np.int64)
        out = np.zeros((len(rows), m["dim"]), dtype=np.float32)
        for c in m["chunks"]:
            sel = np.nonzero((rows >= c["start"]) & (rows < c["start"] + c["rows"]))[0]
            if len(sel):
                arr = np.load(self.root / c["file"], mmap_mode="r")
                out[sel] = arr[rows[sel] - c["start"]]
        return out
