"""A model version's directory: written beside the live ones, renamed into place, never modified.

``manifest.json`` says what the head is (tracker, version, kind, labels in output order, training's
threshold, encoder, featurizer, input and output names and shapes, metrics, answer counts, library
versions, who and when) and lists the sha256 of every other file. ``open_version`` refuses a
directory whose manifest or files do not match, or whose encoder is not the one serving.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import onnx

from trackers.ml.embedding import file_sha256
from trackers.ml.storage import fsync_dir

MANIFEST = "manifest.json"
HEAD_FILE = "head.onnx"
FORMAT = "trackers-model-version/1"
LIBRARIES = ("onnx", "onnxruntime", "numpy", "scikit-learn", "tokenizers")


class ArtifactMismatch(RuntimeError):
    """A version's files are not what its manifest (or the database) says, or its encoder differs."""


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()


def write_version(root: Path, name: str, head: onnx.ModelProto, manifest: dict[str, Any]) -> tuple[Path, str]:
    """Write ``head`` and ``manifest`` (plus the files' hashes) into ``root/name``; return the directory
    and the manifest's sha256. The directory appears whole or not at all."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    if final.exists():
        raise FileExistsError(f"{final} exists: a version directory is never written twice")
    work = root / f".tmp-{name}-{uuid.uuid4().hex}"
    work.mkdir()
    try:
        (work / HEAD_FILE).write_bytes(head.SerializeToString())
        manifest = {**manifest, "format": FORMAT, "files": {HEAD_FILE: file_sha256(work / HEAD_FILE)}}
        data = manifest_bytes(manifest)
        (work / MANIFEST).write_bytes(data)
        for f in work.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(work)
        os.rename(work, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return final, hashlib.sha256(data).hexdigest()


def open_version(directory: Path, manifest_sha256: str, encoder_id: str) -> dict[str, Any]:
    """The manifest of a version directory, after checking it and every file it lists. A refusal
    names the file within the version, never where the install keeps it."""
    path = Path(directory) / MANIFEST
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactMismatch(f"its {MANIFEST} cannot be read ({type(exc).__name__})") from exc
    if hashlib.sha256(data).hexdigest() != manifest_sha256:
        raise ArtifactMismatch(f"its {MANIFEST} is not the manifest this version was written with")
    manifest: dict[str, Any] = json.loads(data)
    if manifest.get("format") != FORMAT:
        raise ArtifactMismatch(f"its {MANIFEST} has an unknown format {str(manifest.get('format'))[:40]!r}")
    for name, sha in manifest["files"].items():
        f = Path(directory) / name
        if not f.is_file() or file_sha256(f) != sha:
            raise ArtifactMismatch(f"its {name} does not match the sha256 its manifest lists")
    if manifest["encoder"]["id"] != encoder_id:
        raise ArtifactMismatch(
            f"version {manifest['version']} was trained on vectors of {manifest['encoder']['id']}, "
            f"but the encoder serving is {encoder_id}"
        )
    return manifest
