"""Artifacts shared through an S3-compatible bucket, for installs whose processes run on several hosts.

With ``TRACKERS_STORAGE_URL`` set (``s3://bucket/prefix?endpoint_url=https://…&region=…``; the keys
come from the usual ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``), every artifact written under
the artifact root — model versions, training runs' heads and evidence, vector stores, search indexes
— is also put in the bucket (``push``), under its path relative to the root, with its SHA-256. A
process that needs one it does not have fetches it (``fetched``), checks the SHA-256 and moves it into
place atomically: the artifact root becomes each host's local cache. Artifacts are never rewritten
in place, except a vector store's manifest, which grows under the dataset's row lock and is fetched
again whenever the database says the store has more rows than the local copy.

Rows keep the absolute path of the host that wrote an artifact; ``local`` maps it under this host's
root. Without ``TRACKERS_STORAGE_URL`` every function here leaves the local files as they are.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from trackers.ml.embedding import file_sha256

log = logging.getLogger(__name__)

TOP_FOLDERS = ("datasets", "trackers", "downloads", "encoders")  # what the artifact root holds
_verified: set[str] = set()  # local files whose SHA-256 this process has checked
_lock = threading.Lock()


def enabled() -> bool:
    return bool(settings.STORAGE_URL)


def parse(url: str) -> dict[str, Any]:
    """The bucket, key prefix, endpoint and region of a ``TRACKERS_STORAGE_URL``."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ImproperlyConfigured(
            f"TRACKERS_STORAGE_URL must read s3://<bucket>/<prefix>?endpoint_url=<url>&region=<region> "
            f"(got {url!r})"
        )
    query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    unknown = set(query) - {"endpoint_url", "region"}
    if unknown:
        raise ImproperlyConfigured(f"TRACKERS_STORAGE_URL: unknown option(s) {', '.join(sorted(unknown))}")
    return {
        "bucket": parsed.netloc,
        "prefix": parsed.path.strip("/"),
        "endpoint_url": query.get("endpoint_url"),
        "region": query.get("region"),
    }


@functools.cache
def _storage(url: str) -> Any:
    from storages.backends.s3 import S3Storage  # type: ignore[import-untyped]

    conf = parse(url)
    return S3Storage(
        bucket_name=conf["bucket"],
        location=conf["prefix"],
        endpoint_url=conf["endpoint_url"],
        region_name=conf["region"],
        file_overwrite=True,
    )


def _bucket() -> Any:
    return _storage(settings.STORAGE_URL).bucket


def _root() -> Path:
    return Path(settings.ARTIFACT_ROOT)


def local(stored: str | Path) -> Path:
    """This host's path of an artifact a row names (perhaps with another host's root)."""
    path = Path(stored)
    root = _root()
    if not path.is_absolute():
        return root / path
    if path == root or root in path.parents:
        return path
    parts = path.parts
    for i, part in enumerate(parts):
        if part in TOP_FOLDERS:
            return root.joinpath(*parts[i:])
    return path


def _key(path: Path) -> str | None:
    """The object key of a path under the artifact root (None: not an artifact, e.g. an upload)."""
    try:
        relative = path.resolve().relative_to(_root().resolve()).as_posix()
    except ValueError:
        return None
    prefix = parse(settings.STORAGE_URL)["prefix"]
    return f"{prefix}/{relative}" if prefix else relative


def push(path: Path) -> int:
    """Put a file, or every file under a folder, in the bucket; returns how many."""
    if not enabled() or not path.exists():
        return 0
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    bucket = _bucket()
    for file in files:
        key = _key(file)
        if key is None:
            continue
        bucket.upload_file(str(file), key, ExtraArgs={"Metadata": {"sha256": file_sha256(file)}})
        with _lock:
            _verified.add(str(file))
    return len(files)


def fetched(stored: str | Path, *, again: tuple[str, ...] = ()) -> Path:
    """The local path of an artifact (a file or a folder), fetched from the bucket when this host
    lacks it or any file of it; names in ``again`` are fetched even when present (a store's manifest)."""
    path = local(stored)
    if not enabled():
        return path
    with _lock:
        known = str(path) in _verified
    if known and path.is_file() and path.name not in again:
        return path  # fetched or checked already by this process: no round trip to the bucket
    bucket = _bucket()
    key = _key(path)
    if key is None:
        return path
    objects = [o for o in bucket.objects.filter(Prefix=key) if o.key == key or o.key.startswith(key + "/")]
    for obj in objects:
        target = path if obj.key == key else path / obj.key[len(key) + 1 :]
        if target.exists() and target.name not in again:
            _check_once(target, obj)
            continue
        _download(bucket, obj, target)
    return path


def _check_once(target: Path, obj: Any) -> None:
    with _lock:
        if str(target) in _verified:
            return
    expected = obj.Object().metadata.get("sha256")
    if expected and file_sha256(target) != expected:
        log.warning("%s differs from the bucket's copy: fetched again", target)
        _download(obj.Bucket(), obj, target)
        return
    with _lock:
        _verified.add(str(target))


def _download(bucket: Any, obj: Any, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".fetch-", dir=target.parent)
    os.close(fd)
    try:
        bucket.download_file(obj.key, tmp)
        expected = obj.Object().metadata.get("sha256")
        if expected and file_sha256(Path(tmp)) != expected:
            raise OSError(f"{obj.key} does not match its SHA-256 in the bucket")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    with _lock:
        _verified.add(str(target))


def remove(path: Path) -> int:
    """Take a deleted artifact (a file or a folder) out of the bucket too; returns how many objects."""
    if not enabled():
        return 0
    key = _key(local(path))
    if key is None:
        return 0
    bucket = _bucket()
    objects = [o for o in bucket.objects.filter(Prefix=key) if o.key == key or o.key.startswith(key + "/")]
    for obj in objects:
        obj.delete()
    return len(objects)


def fetch_everything() -> int:
    """Fetch every artifact of the bucket this host lacks (a backup's, so its archive is whole);
    returns how many files were fetched."""
    if not enabled():
        return 0
    prefix = parse(settings.STORAGE_URL)["prefix"]
    bucket = _bucket()
    count = 0
    for obj in bucket.objects.filter(Prefix=f"{prefix}/" if prefix else ""):
        relative = obj.key[len(prefix) + 1 :] if prefix else obj.key
        target = _root() / relative
        if not target.exists():
            _download(bucket, obj, target)
            count += 1
    return count
