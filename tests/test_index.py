"""FAISS index build/save/load/search and the append-only vector store, on small arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trackers.ml import index
from trackers.ml.storage import VectorStore, VectorStoreMismatch, write_atomic


def unit(rng, n, d=32):
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("n", "setting", "expected"),
    [
        (10, "auto", "flat"),
        (200_000, "auto", "flat"),
        (200_001, "auto", "hnsw"),
        (5, "ivf", "ivf"),
        (10**7, "flat", "flat"),
    ],
)
def test_choose_kind(n, setting, expected):
    assert index.choose_kind(n, setting, flat_max=200_000) == expected


def test_choose_kind_rejects_unknown_settings():
    with pytest.raises(ValueError, match="unknown index kind 'lsh'"):
        index.choose_kind(10, "lsh")


def test_flat_index_finds_exact_neighbours_and_roundtrips(tmp_path):
    rng = np.random.default_rng(0)
    vecs = unit(rng, 500)
    built = index.build(vecs, "flat")
    path = tmp_path / "i.faiss"
    index.save(built, path)
    loaded = index.load(path)
    scores, rows = index.search(loaded, vecs[[3, 42]], 5)
    assert rows[:, 0].tolist() == [3, 42]
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)
    brute = np.argsort(-(vecs @ vecs[42]))[:5]
    assert rows[1].tolist() == brute.tolist()


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_have_high_recall(kind):
    rng = np.random.default_rng(1)
    centres = unit(rng, 40)  # sentence vectors cluster by topic; uniform noise would not
    vecs = centres[rng.integers(0, 40, 4000)] + 0.4 * unit(rng, 4000) / np.sqrt(2)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    queries = vecs[:100] + 0.05 * unit(rng, 100)
    built = index.build(vecs, kind)
    _, rows = index.search(built, queries, 10)
    truth = np.argsort(-(queries @ vecs.T), axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, truth, strict=True)])
    assert recall >= 0.9


def test_load_sees_a_replaced_index(tmp_path):
    rng = np.random.default_rng(2)
    path = tmp_path / "i.faiss"
    index.save(index.build(unit(rng, 10), "flat"), path)
    assert index.load(path).ntotal == 10
    index.save(index.build(unit(rng, 20), "flat"), path)
    assert index.load(path).ntotal == 20


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_text("old")

    def boom(tmp):
        with open(tmp, "w") as fh:
            fh.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_atomic(path, boom)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_vector_store_appends_and_reads_rows(tmp_path):
    rng = np.random.default_rng(3)
    store = VectorStore(tmp_path / "v")
    a, b = unit(rng, 5), unit(rng, 3)
    assert store.append(a, "enc:1") == 0
    assert store.append(b, "enc:1") == 5
    assert store.rows == 8
    assert np.array_equal(store.load(), np.vstack([a, b]))
    assert np.array_equal(store.get([6, 0, 7]), np.vstack([b[1], a[0], b[2]]))
    manifest = json.loads((tmp_path / "v" / "manifest.json").read_text())
    assert manifest["encoder_id"] == "enc:1" and [c["rows"] for c in manifest["chunks"]] == [5, 3]


def test_vector_store_refuses_vectors_of_another_encoder(tmp_path):
    store = VectorStore(tmp_path / "v")
    store.append(np.ones((2, 4), np.float32), "enc:1")
    with pytest.raises(VectorStoreMismatch, match="store holds 4-d vectors of enc:1; got 4-d of enc:2"):
        store.append(np.ones((2, 4), np.float32), "enc:2")
    assert store.rows == 2


def test_a_crash_between_chunk_and_manifest_leaves_the_store_readable(tmp_path, monkeypatch):
    store = VectorStore(tmp_path / "v")
    store.append(np.ones((2, 4), np.float32), "enc:1")
    import trackers.ml.storage as storage

    def crash(path, data):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(storage, "write_json_atomic", crash)
    with pytest.raises(KeyboardInterrupt):
        store.append(np.zeros((3, 4), np.float32), "enc:1")
    assert store.rows == 2 and store.load().shape == (2, 4)
