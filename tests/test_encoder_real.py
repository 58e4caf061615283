"""The exported ONNX encoder against sentence-transformers on real texts; no torch at run time."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from django.conf import settings

from tests.conftest import REPO, shared_file
from trackers.ml.embedding import EncoderNotPrepared, OnnxEncoder, read_manifest

pytestmark = pytest.mark.real_encoder


@pytest.fixture(scope="session")
def encoder_dir(django_db_blocker):
    from django.core.management import call_command

    call_command("prepare_encoder")  # no-op when `make test` already exported it
    return settings.ENCODER_DIR


@pytest.fixture(scope="session")
def sms_texts():
    path = shared_file("sms_spam", "dev.csv")
    with open(path, newline="", encoding="utf-8") as fh:
        return [row["text"] for row in csv.DictReader(fh)]


@pytest.fixture(scope="session")
def reference(sms_texts):
    from sentence_transformers import SentenceTransformer

    from trackers.ml.export_encoder import packaged_model_dir

    model = SentenceTransformer(str(packaged_model_dir()), device="cpu")
    return model.encode(sms_texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)


def test_fp32_matches_sentence_transformers(encoder_dir, sms_texts, reference):
    ours = OnnxEncoder(encoder_dir, "fp32").encode(sms_texts)
    cos = np.sum(ours * reference, axis=1)
    assert ours.shape == reference.shape == (len(sms_texts), 384)
    assert cos.min() >= 0.999, f"worst cosine {cos.min():.5f} for {sms_texts[int(cos.argmin())]!r}"


def test_int8_per_channel_stays_close(encoder_dir, sms_texts, reference):
    ours = OnnxEncoder(encoder_dir, "int8").encode(sms_texts)
    cos = np.sum(ours * reference, axis=1)
    assert cos.mean() >= 0.985, f"mean cosine {cos.mean():.4f}"
    assert cos.min() >= 0.9, f"worst cosine {cos.min():.4f} for {sms_texts[int(cos.argmin())]!r}"


def test_fp32_is_independent_of_batching(encoder_dir, sms_texts):
    enc = OnnxEncoder(encoder_dir, "fp32")
    texts = sms_texts[:40]
    together = enc.encode(texts, batch_size=32)
    alone = np.vstack([enc.encode([t]) for t in texts])
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert np.allclose(together, alone, atol=1e-4)


def test_int8_vectors_do_not_depend_on_their_batch(encoder_dir, sms_texts):
    # Dynamic int8 scales activations per batch, so batched texts would nudge each other's vectors
    # (cosine down to 0.95): the encoder runs each text alone.
    enc = OnnxEncoder(encoder_dir, "int8")
    texts = sms_texts[:200]
    together = enc.encode(texts, batch_size=32)
    alone = np.vstack([enc.encode([t]) for t in texts])
    shuffled = enc.encode(texts[::-1], batch_size=7)[::-1]
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(together, alone) and np.array_equal(together, shuffled)


def test_long_texts_are_truncated_at_the_model_limit(encoder_dir, reference):
    from sentence_transformers import SentenceTransformer

    from trackers.ml.export_encoder import packaged_model_dir

    long = " ".join(["the quarterly renewal price is far above what we budgeted"] * 60)
    st = SentenceTransformer(str(packaged_model_dir()), device="cpu").encode(
        [long], normalize_embeddings=True
    )
    ours = OnnxEncoder(encoder_dir, "fp32").encode([long])
    assert read_manifest(encoder_dir)["tokenizer"]["max_tokens"] == 256
    assert float(ours[0] @ st[0]) >= 0.999


def test_manifest_describes_the_artifacts(encoder_dir):
    m = read_manifest(encoder_dir)
    assert m["dim"] == 384 and m["pooling"] == "mean" and m["normalize"] is True
    assert set(m["variants"]) == {"fp32", "int8"}
    assert "per-channel" in m["quantization"]["int8"]
    for v in m["variants"].values():
        assert (encoder_dir / v["file"]).stat().st_size == v["bytes"] and len(v["sha256"]) == 64


def test_a_truncated_model_file_is_refused(encoder_dir, tmp_path):
    import shutil

    copy = tmp_path / "enc"
    shutil.copytree(encoder_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    model = copy / manifest["variants"]["int8"]["file"]
    model.write_bytes(model.read_bytes()[:1000])
    with pytest.raises(EncoderNotPrepared, match="missing or truncated"):
        OnnxEncoder(copy, "int8")
    with pytest.raises(EncoderNotPrepared, match="prepare_encoder"):
        OnnxEncoder(tmp_path / "nothing-here", "int8")


def test_web_process_search_path_never_imports_torch(encoder_dir):
    code = (
        "import django, sys; django.setup();"
        "import config.urls, config.wsgi;"
        "from trackers.encoders import get_encoder; v = get_encoder().encode(['my card never arrived']);"
        "assert v.shape == (1, 384);"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'sentence_transformers', 'transformers'});"
        "print('IMPORTED', bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "config.settings"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.django_db
def test_real_search_finds_paraphrases(owner_client, dataset, django_capture_on_commit_callbacks):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.urls import reverse

    path = shared_file("banking77", "dev.csv")
    labels = {
        "lost_or_stolen_card",
        "exchange_rate",
        "card_arrival",
        "top_up_failed",
        "pin_blocked",
        "refund_not_showing_up",
    }
    rows, seen = [], dict.fromkeys(labels, 0)
    for r in csv.DictReader(open(path, newline="", encoding="utf-8")):
        if r["label"] in labels and seen[r["label"]] < 60:
            seen[r["label"]] += 1
            rows.append(r)
    data = "text,label\n" + "".join(
        f'"{r["text"].replace(chr(34), chr(34) * 2)}",{r["label"]}\n' for r in rows
    )
    with django_capture_on_commit_callbacks(execute=True):  # import, embed and index run on commit
        owner_client.post(
            reverse("dataset-upload", args=[dataset.code]),
            {"file": SimpleUploadedFile("b77.csv", data.encode()), "format": "auto", "on_error": "reject"},
        )
    hits = owner_client.get(
        reverse("search", args=[dataset.code]), {"q": "someone took my card", "k": 10}
    ).context["hits"]
    found = [h.segment.known_label for h in hits]
    assert found.count("lost_or_stolen_card") >= 7, found  # 1 in 6 by chance
