"""Sentence encoder at run time: tokenizers + onnxruntime, texts -> float32[n, dim].

No torch and no Django here. Artifacts are produced once by ``export_encoder`` and
described by a manifest that this module checks before loading.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

MANIFEST_NAME = "manifest.json"
VARIANTS = ("fp32", "int8")
MODEL_FILES = {"fp32": "model-fp32.onnx", "int8": "model-int8.onnx"}


class EncoderNotPrepared(RuntimeError):
    """The ONNX encoder artifacts are missing or do not match their manifest."""


@dataclass(frozen=True)
class EncoderSpec:
    model_name: str
    variant: str
    dim: int
    max_tokens: int
    sha256: str

    @property
    def encoder_id(self) -> str:
        return f"{self.model_name}:{self.variant}:{self.sha256[:12]}"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(artifact_dir: Path) -> dict[str, Any]:
    path = Path(artifact_dir) / MANIFEST_NAME
    if not path.exists():
        raise EncoderNotPrepared(
            f"No encoder manifest at {path}; run `python manage.py prepare_encoder` first."
        )
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest


class OnnxEncoder:
    """One tokenizer and one inference session; thread-safe ``encode``."""

    def __init__(self, artifact_dir: Path | str, variant: str = "int8", *, threads: int = 0):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if variant not in VARIANTS:
            raise ValueError(f"unknown encoder variant {variant!r}; expected one of {VARIANTS}")
        artifact_dir = Path(artifact_dir)
        manifest = read_manifest(artifact_dir)
        entry = manifest["variants"].get(variant)
        if entry is None:
            raise EncoderNotPrepared(f"variant {variant!r} missing from {artifact_dir / MANIFEST_NAME}")
        model_path = artifact_dir / entry["file"]
        if not model_path.exists() or os.path.getsize(model_path) != entry["bytes"]:
            raise EncoderNotPrepared(f"{model_path} is missing or truncated; re-run prepare_encoder")
        self.spec = EncoderSpec(
            model_name=manifest["model_name"],
            variant=variant,
            dim=int(manifest["dim"]),
            max_tokens=int(manifest["tokenizer"]["max_tokens"]),
            sha256=entry["sha256"],
        )
        tok = Tokenizer.from_file(str(artifact_dir / manifest["tokenizer"]["file"]))
        # The shipped tokenizer pads everything to 128; pad only to the longest in a batch.
        tok.no_padding()
        tok.enable_padding(
            pad_id=manifest["tokenizer"]["pad_id"], pad_token=manifest["tokenizer"]["pad_token"]
        )
        tok.enable_truncation(max_length=self.spec.max_tokens)
        self._tokenizer = tok
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        self._session = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        self._input_names = {i.name for i in self._session.get_inputs()}
        self._lock = threading.Lock()

    @property
    def encoder_id(self) -> str:
        return self.spec.encoder_id

    @property
    def dim(self) -> int:
        return self.spec.dim

    def _encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:  # the Rust tokenizer's padding state is shared
            encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden: np.ndarray = self._session.run(None, feeds)[0]
        m = mask[..., None].astype(np.float32)
        pooled: npt.NDArray[np.float32] = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        norms: npt.NDArray[np.float32] = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)

    @property
    def batch_independent(self) -> bool:
        """Whether a text's vector is the same in any batch: dynamic int8 quantization scales the
        activations per batch, so batch-mates would move it (cosine down to 0.95)."""
        return self.spec.variant != "int8"

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids as the model reads them (its tokenizer, its truncation, the sentence
        markers included), without padding: what ``trackers.ml.ngrams`` counts."""
        with self._lock:  # the Rust tokenizer's padding state is shared
            encodings = self._tokenizer.encode_batch(list(texts))
        return [[i for i, m in zip(e.ids, e.attention_mask, strict=True) if m] for e in encodings]

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Embed texts; batches are formed from texts of similar length, output keeps input order.

        With the int8 variant each text is run alone, so that its vector (and every score made from
        it: stored for training, served, or by a downloaded model) never depends on its batch;
        measured on SMS texts this costs about 15% of the batched throughput.
        """
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        if not self.batch_independent:
            batch_size = 1
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = self._encode_batch([texts[i] for i in idx])
        return out


_cache: dict[tuple[str, str, int], OnnxEncoder] = {}
_cache_lock = threading.Lock()


def load_encoder(artifact_dir: Path | str, variant: str, threads: int = 0) -> OnnxEncoder:
    """One encoder per process per (artifact dir, variant, threads); ``threads`` 0 uses every core."""
    key = (str(artifact_dir), variant, threads)
    with _cache_lock:
        enc = _cache.get(key)
        if enc is None:
            enc = _cache[key] = OnnxEncoder(artifact_dir, variant, threads=threads)
        return enc
