"""Model versions: published from finished training runs, promoted by themselves or by the owner."""

from __future__ import annotations

import hashlib
import logging
import uuid
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from labeling import progress
from labeling import services as labeling
from labeling.ml import promotion
from labeling.models import TrainingRun, TrainingState
from serving.ml import artifacts
from serving.ml.export import SCORES, TOKENS, VECTORS, NotExportable, head_model, standalone_model
from serving.ml.heads import check_graph
from serving.models import ModelVersion, PromotionPolicy, estimated_quality
from trackers import audit, backup, bucket, deletion, encoders, errors, work
from trackers.ml.embedding import read_manifest
from trackers.ml.storage import write_atomic
from trackers.models import AuditAction, Dataset, Tracker, TrackerKind

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from django.db.models import QuerySet

log = logging.getLogger(__name__)


def versions_root(tracker: Tracker) -> Path:
    return Path(settings.ARTIFACT_ROOT) / "trackers" / str(tracker.code) / "versions"


def encoder_id_of(tracker: Tracker) -> str | None:
    """The encoder that made the vectors of the tracker's datasets (None if they disagree or have none)."""
    return encoder_ids_of([tracker.pk])[tracker.pk]


def encoder_ids_of(tracker_ids: list[int]) -> dict[int, str | None]:
    """``encoder_id_of`` for many trackers in one query."""
    ids: dict[int, set[str]] = {t: set() for t in tracker_ids}
    for tracker_id, encoder_id in Tracker.datasets.through.objects.filter(
        tracker_id__in=tracker_ids
    ).values_list("tracker_id", "dataset__encoder_id"):
        ids[tracker_id].add(encoder_id)
    for found in ids.values():
        found.discard("")
    return {t: found.pop() if len(found) == 1 else None for t, found in ids.items()}


def _encoder_entry(tracker: Tracker) -> dict[str, Any]:
    encoder = encoders.get_encoder(encoder_id_of(tracker))
    spec = getattr(encoder, "spec", None)
    return {
        "id": encoder.encoder_id,
        "sha256": getattr(spec, "sha256", ""),
        "model_name": getattr(spec, "model_name", encoder.encoder_id),
        "variant": getattr(spec, "variant", ""),
        "dim": encoder.dim,
        "max_tokens": getattr(spec, "max_tokens", None),
        "pooling": "mean",
        "normalize": True,
    }


def publish_version(run: TrainingRun) -> ModelVersion | None:
    """The run's model version, written once: later calls (a redelivered task, the sweeper) return it."""
    existing = ModelVersion.objects.filter(training_run=run).first()
    if existing is not None or not run.has_model:
        return existing
    tracker = run.tracker
    scorer = labeling.scorer_for(run)
    topic = tracker.kind == TrackerKind.TOPIC
    head = head_model(
        scorer.coef, scorer.intercept, topic=topic, featurizer=scorer.featurizer, ngrams=scorer.ngrams
    )
    try:  # serving applies the weights with numpy: the file must answer as they do, checked once here
        check_graph(head)
    except ValueError as exc:
        raise NotExportable(str(exc)) from exc
    encoder = _encoder_entry(tracker)
    labels = list(scorer.labels) if topic else ["yes"]
    quality = estimated_quality(run)
    with transaction.atomic():
        # One number at a time per tracker, and one promotion decision.
        Tracker.objects.select_for_update().filter(pk=tracker.pk).first()
        if (existing := ModelVersion.objects.filter(training_run=run).first()) is not None:
            return existing
        number = (
            ModelVersion.objects.filter(tracker=tracker)
            .order_by("-number")
            .values_list("number", flat=True)
            .first()
            or 0
        ) + 1
        manifest = {
            "tracker": {
                "code": str(tracker.code),
                "name": tracker.name,
                "workspace": str(tracker.workspace.code),
            },
            "version": number,
            "kind": tracker.kind,
            "granularity": tracker.granularity,
            "labels": labels,
            "threshold": run.threshold,
            "threshold_rule": run.threshold_rule,
            "encoder": encoder,
            "featurizer": {
                "name": scorer.featurizer,
                "params": {"ngrams": len(scorer.ngrams), "n": [1, 2], "weighting": "idf, unit length"}
                if scorer.reads_tokens and scorer.ngrams is not None
                else {},
            },
            "inputs": [
                {"name": VECTORS, "type": "float32", "shape": ["n", encoder["dim"]]},
                *(
                    [
                        {
                            "name": TOKENS,
                            "type": "int64",
                            "shape": ["n", "tokens"],
                            "meaning": "the encoder's token ids",
                        }
                    ]
                    if scorer.reads_tokens
                    else []
                ),
            ],
            "outputs": [
                {
                    "name": SCORES,
                    "type": "float32",
                    "shape": ["n", len(labels)],
                    "meaning": "softmax over labels" if topic else "P(yes)",
                }
            ],
            "metrics": {"cv": run.metrics.get("cv"), "estimates": run.metrics.get("estimates")},
            "quality": quality,
            "answers": run.label_counts,
            "training_run": str(run.code),
            "libraries": artifacts.library_versions(),
            "created_by": tracker.created_by.get_username() if tracker.created_by else None,
            "created_at": timezone.now().isoformat(),
        }
        # Named by the new version's code: an attempt that fails after writing leaves a directory no
        # row points at, and the next attempt writes its own.
        code = uuid.uuid4()
        directory, sha = artifacts.write_version(versions_root(tracker), str(code), head, manifest)
        bucket.push(directory)  # before any row names it: every host can fetch what a row points at
        version = ModelVersion.objects.create(
            code=code,
            tracker=tracker,
            number=number,
            training_run=run,
            labels=labels,
            artifact_dir=str(directory),
            manifest_sha256=sha,
        )
        live = live_version(tracker)
        if promotes_automatically(tracker) and (live is None or _at_least_as_good(version, live)):
            _make_live(version, None)
    return version


def promotes_automatically(tracker: Tracker) -> bool:
    """Whether the tracker's new versions go live by themselves (unless clearly worse)."""
    found = PromotionPolicy.objects.filter(tracker=tracker).values_list("automatic", flat=True).first()
    return True if found is None else found


def set_automatic_promotion(tracker: Tracker, automatic: bool) -> None:
    PromotionPolicy.objects.update_or_create(tracker=tracker, defaults={"automatic": automatic})


def _at_least_as_good(new: ModelVersion, live: ModelVersion) -> bool:
    interval = new.quality_interval
    return promotion.goes_live(new.quality, interval[1] if interval else None, live.quality)  # as simulated


def serving_versions() -> QuerySet[ModelVersion]:
    """Versions with what answering needs (tracker, run's threshold), not the run's bulky metrics."""
    return ModelVersion.objects.select_related("tracker", "training_run").defer("training_run__metrics")


def live_version(tracker: Tracker) -> ModelVersion | None:
    return serving_versions().filter(tracker=tracker, is_live=True).first()


class VersionRefused(errors.Conflict):
    """A version that cannot serve, and why (its files, or the encoder its tracker's vectors need)."""


def check_version(version: ModelVersion) -> None:
    """Refuse a version whose files fail their checksums or whose encoder is not the one serving."""
    try:
        encoder_id = encoders.get_encoder(encoder_id_of(version.tracker)).encoder_id
        artifacts.open_version(version.directory(), version.manifest_sha256, encoder_id)
    except (artifacts.ArtifactMismatch, encoders.EncoderMismatch) as exc:
        raise VersionRefused(f"version {version.number} cannot serve: {exc}") from exc


def promote(version: ModelVersion, user: User | None) -> ModelVersion:
    """Make ``version`` the live one of its tracker (a rollback is a promotion of an older one), once
    its files and encoder are checked: a version that cannot serve never goes live."""
    check_version(version)
    with transaction.atomic():
        Tracker.objects.select_for_update().filter(pk=version.tracker_id).first()
        _make_live(version, user)
    return version


def _make_live(version: ModelVersion, user: User | None) -> None:
    before = (
        ModelVersion.objects.filter(tracker_id=version.tracker_id, is_live=True)
        .values_list("number", flat=True)
        .first()
    )
    if before == version.number:
        return
    # Off first, then on: the one-live constraint is checked per statement.
    ModelVersion.objects.filter(tracker_id=version.tracker_id, is_live=True).exclude(pk=version.pk).update(
        is_live=False
    )
    version.is_live, version.went_live_at, version.went_live_by = True, timezone.now(), user
    version.save(update_fields=["is_live", "went_live_at", "went_live_by"])
    back = before is not None and version.number < before
    audit.record(
        AuditAction.VERSION_ROLLED_BACK if back else AuditAction.VERSION_PROMOTED,
        workspace=version.tracker.workspace,
        target=f"{version.tracker.name} v{version.number}",
        code=version.tracker.code,
        detail={"version": version.number, "replaced": before, "automatic": user is None},
        user=user,
    )


def threshold_of(version: ModelVersion) -> tuple[float | None, str]:
    """The threshold a version answers with, and whose it is: none for a topic tracker (it answers
    with its most likely label); the owner's, set while it was live; else the one training chose
    for the tracker's target precision. The one rule, for every path that decides a match, for
    pinned calls and for the download."""
    if version.tracker.kind == TrackerKind.TOPIC:
        return None, "none"
    if version.threshold_override is not None:
        return version.threshold_override, "owner"
    return version.threshold, "training"


class ThresholdRefused(errors.Invalid):
    """A threshold the owner cannot set, and why."""


def set_threshold(version: ModelVersion, user: User | None, value: float | None) -> None:
    """The owner moves the live version's threshold (``value``), or gives it back to training
    (None); kept with the version, with who and when. The next request in every process answers
    with it (a version's save moves its workspace's access generation)."""
    if version.tracker.kind == TrackerKind.TOPIC:
        raise ThresholdRefused(
            "a topic tracker answers with its most likely label: it has no threshold", field="threshold"
        )
    if not version.is_live:
        raise ThresholdRefused(
            f"version {version.number} is not live: the threshold is set for the version the API answers with",
            field="threshold",
        )
    if value is not None and not 0.0 < value < 1.0:
        raise ThresholdRefused(f"threshold must be between 0 and 1 (got {value:g})", field="threshold")
    before = threshold_of(version)[0]
    version.threshold_override = value
    version.threshold_set_by = user
    version.threshold_set_at = timezone.now()
    with transaction.atomic():
        version.save(update_fields=["threshold_override", "threshold_set_by", "threshold_set_at"])
        audit.record(
            AuditAction.THRESHOLD_MOVED,
            workspace=version.tracker.workspace,
            target=f"{version.tracker.name} v{version.number}",
            code=version.tracker.code,
            detail={"from": before, "to": threshold_of(version)[0], "training's": value is None},
            user=user,
        )


def live_for_pages(sender: Any, *, tracker: Tracker, **kwargs: Any) -> progress.Live | None:
    """The tracker's live model, for the pages and answers that show its numbers (``progress.live``)."""
    version = (
        ModelVersion.objects.select_related("tracker", "training_run", "threshold_set_by")
        .filter(tracker=tracker, is_live=True)
        .first()
    )
    if version is None:
        return None
    threshold, source = threshold_of(version)
    by = version.threshold_set_by
    newest = ModelVersion.objects.filter(tracker=tracker).select_related("training_run", "tracker").first()
    newer, why = None, ""
    if newest is not None and newest.number > version.number:
        newer = newest.number
        measure = "accuracy" if tracker.kind == TrackerKind.TOPIC else "F1"
        if not promotes_automatically(tracker):
            why = "automatic promotion is off: new versions wait for an owner to promote them"
        elif newest.quality is None or version.quality is None:
            why = f"its estimated {measure} could not be compared with the live version's"
        else:
            interval = newest.quality_interval
            top = f", at most {interval[1]:.2f}" if interval else ""
            why = (
                f"its estimated {measure} ({newest.quality:.2f}{top}) was clearly below the live "
                f"version's ({version.quality:.2f}) when it was published"
            )
    return progress.Live(
        newer=newer,
        newer_waits_because=why,
        run=version.training_run,
        version=version.number,
        threshold=threshold,
        threshold_source=source,
        threshold_set_by=by.get_username() if by is not None and source == "owner" else "",
        threshold_set_at=version.threshold_set_at if source == "owner" else None,
    )


def publish_after_training(sender: type[TrainingRun], row: TrainingRun, **kwargs: Any) -> None:
    """A run that ended with a model gets its version, in a task of its own once the outcome commits."""
    if row.state != TrainingState.SUCCEEDED or not row.head_file:
        return
    work.send_on_commit("serving.tasks.publish_version", training_run_id=row.pk)


def publish_missing(older_than_s: float = 60) -> list[int]:
    """Periodic: runs with a model but no version (their task was lost) are published now."""
    cutoff = timezone.now() - timedelta(seconds=older_than_s)
    done = []
    for run in (
        TrainingRun.objects.filter(
            state=TrainingState.SUCCEEDED, finished_at__lt=cutoff, model_version__isnull=True
        )
        .exclude(head_file="")
        .order_by("finished_at")
    ):
        try:
            if publish_version(run) is not None:
                done.append(run.pk)
        except Exception:
            log.exception("publishing training run %s failed", run.pk)
    return done


class NoStandalone(RuntimeError):
    """The version's vectors were not made by an ONNX encoder of this install."""


def zip_path(version: ModelVersion) -> Path:
    """Where a version's standalone zip is kept once built: one per threshold in use, which its
    manifest carries."""
    threshold, _ = threshold_of(version)
    at = "" if threshold is None else hashlib.sha256(repr(float(threshold)).encode()).hexdigest()[:12]
    return Path(settings.ARTIFACT_ROOT) / "downloads" / str(version.code) / at / download_name(version)


def download_name(version: ModelVersion) -> str:
    """The file name a person gets."""
    return _safe_name(f"{version.tracker.name[:40]}-v{version.number}.zip")


def standalone_zip(version: ModelVersion) -> Path:
    """The version's standalone model (encoder and head in one ONNX file, the tokenizer, the manifest),
    built on first request and kept: token ids in, sentence vector and scores out. Its manifest's
    ``threshold`` is the one the version answers with now (``threshold_of``), so the download
    classifies as the API does; ``training_threshold`` is training's."""
    path = zip_path(version)
    try:
        manifest = artifacts.open_version(
            version.directory(), version.manifest_sha256, encoders.get_encoder().encoder_id
        )
    except artifacts.ArtifactMismatch as exc:  # checked at every download, the zip kept or not
        raise NoStandalone(f"version {version.number} cannot be downloaded: {exc}") from exc
    if path.exists():
        return path
    encoder_dir = Path(settings.ENCODER_DIR)
    encoder_manifest = read_manifest(encoder_dir)
    variant = manifest["encoder"].get("variant")
    entry = encoder_manifest["variants"].get(variant) if variant else None
    if entry is None or entry["sha256"] != manifest["encoder"].get("sha256"):
        raise NoStandalone(
            f"version {version.number} was not trained on vectors of this install's ONNX encoder"
        )
    head = onnx.load(str(version.directory() / artifacts.HEAD_FILE))
    model = standalone_model(
        onnx.load(str(encoder_dir / entry["file"])), head, hidden=encoder_manifest["output"]
    )
    tokenizer = encoder_manifest["tokenizer"]
    threshold, source = threshold_of(version)
    standalone = {
        **manifest,
        "threshold": threshold,
        "threshold_source": source,
        "training_threshold": manifest.get("threshold"),
        "standalone": {
            "file": "model.onnx",
            "inputs": [
                {"name": n, "type": "int64", "shape": ["n", "tokens"]} for n in encoder_manifest["inputs"]
            ],
            "outputs": [
                {"name": VECTORS, "type": "float32", "shape": ["n", encoder_manifest["dim"]]},
                *manifest["outputs"],
            ],
            "tokenizer": {**tokenizer, "file": "tokenizer.json"},
        },
    }

    def write(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("model.onnx", model.SerializeToString())
            archive.write(encoder_dir / tokenizer["file"], "tokenizer.json")
            archive.writestr("manifest.json", artifacts.manifest_bytes(standalone))

    write_atomic(path, write)
    return path


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "-" for c in name)


def describe_deletion(sender: type, *, obj: Any, **kwargs: Any) -> list[str]:
    """The versions that go with a tracker or a workspace (the live ones stop answering)."""
    trackers = deletion.trackers_of(obj)
    if not trackers:
        return []
    versions = ModelVersion.objects.filter(tracker__in=trackers)
    live = versions.filter(is_live=True).count()
    return [f"{versions.count():,} model versions ({live:,} live: the API stops answering for them)"]


def refuse_deletion(sender: type, *, obj: Any, **kwargs: Any) -> str | None:
    """A dataset whose texts a live version was trained on stays while that tracker does."""
    if not isinstance(obj, Dataset):
        return None
    names = sorted(
        set(
            ModelVersion.objects.filter(is_live=True, tracker__datasets=obj).values_list(
                "tracker__name", flat=True
            )
        )
    )
    if not names:
        return None
    return (
        f"the live model of {', '.join(repr(n) for n in names)} was trained on this dataset's texts: "
        "delete those trackers first"
    )


def files_of_deleted(sender: type, *, obj: Any, **kwargs: Any) -> list[Path]:
    """The versions' folders and their standalone downloads."""
    trackers = deletion.trackers_of(obj)
    codes = ModelVersion.objects.filter(tracker__in=trackers).values_list("code", flat=True)
    root = Path(settings.ARTIFACT_ROOT) / "downloads"
    return [versions_root(t) for t in trackers] + [root / str(code) for code in codes]


def relocate_versions(sender: Any, *, old: dict[str, str], new: dict[str, str], **kwargs: Any) -> None:
    """After a restore under other roots: versions' folders, moved along."""
    for version in ModelVersion.objects.all():
        moved = backup.rewrite(version.artifact_dir, old, new)
        if moved != version.artifact_dir:
            ModelVersion.objects.filter(pk=version.pk).update(artifact_dir=moved)
