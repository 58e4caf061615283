"""The process-wide encoder chosen by settings (onnxruntime only; never torch)."""

from __future__ import annotations

from typing import Protocol

import numpy as np
from django.conf import settings

from trackers.ml.embedding import load_encoder


class Encoder(Protocol):
    @property
    def encoder_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray: ...

    def token_ids(self, texts: list[str]) -> list[list[int]]: ...


class EncoderMismatch(RuntimeError):
    """A dataset's vectors came from another encoder than the one configured now."""


_threads = 0  # onnxruntime's intra-op threads in this process; 0: one per core


def limit_threads(threads: int) -> None:
    """Encoders this process loads from now on use at most ``threads`` cores (a bulk worker leaves
    the others to training)."""
    global _threads
    _threads = max(0, threads)


def get_encoder(encoder_id: str | None = None) -> Encoder:
    """The configured encoder; with ``encoder_id``, check it is the one that made those vectors."""
    encoder = load_encoder(settings.ENCODER_DIR, settings.ENCODER_VARIANT, _threads)
    if encoder_id and encoder.encoder_id != encoder_id:
        raise EncoderMismatch(
            f"these vectors were made by {encoder_id}, but the configured encoder is {encoder.encoder_id}; "
            "set TRACKERS_ENCODER_VARIANT back or re-embed the dataset"
        )
    return encoder
