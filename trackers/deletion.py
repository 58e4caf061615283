"""Deleting a tracker, a dataset or a whole workspace, with everything derived from it: its rows, and
its files (vectors, indexes, uploads, training runs' evidence, model versions, downloads).

Owners delete. What goes is said first (``what_goes``): this layer counts its own rows, and the
layers above add theirs through ``describe`` (answers, versions, alert endpoints...). They may also
refuse through ``refuse`` (a dataset whose texts a live version was trained on), and name their
files through ``files_of``. The rows go in one transaction with the audit entry; the files are
removed once it has committed (a crash in between leaves files that nothing points at, never rows
whose files are gone).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Model
from django.dispatch import Signal

from trackers import audit, bucket, errors
from trackers.models import AuditAction, Dataset, Job, Membership, Role, Segment, Tracker, Workspace

log = logging.getLogger(__name__)

# Each sent with ``obj`` (a Workspace, Dataset or Tracker), from the deleting transaction.
describe = Signal()  # receivers return a list of sentences: what of theirs goes with it
refuse = Signal()  # receivers return a reason it may not go now, or None
files_of = Signal()  # receivers return the paths of their files that go with it
deleting = Signal()  # sent just before the rows go: receivers act on what would outlive them


class DeletionRefused(errors.Conflict):
    """It cannot be deleted now, and why."""


def _owner(workspace: Workspace, by: User) -> None:
    role = Membership.objects.filter(workspace=workspace, user=by).values_list("role", flat=True).first()
    if role != Role.OWNER:
        raise errors.Forbidden("only an owner of the workspace deletes it, its datasets and its trackers")


def _workspace_of(obj: Model) -> Workspace:
    return obj if isinstance(obj, Workspace) else obj.workspace  # type: ignore[attr-defined]


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _own_lines(obj: Model) -> list[str]:
    if isinstance(obj, Workspace):
        return [
            _plural(obj.datasets.count(), "dataset")
            + f" ({_plural(Segment.objects.filter(dataset__workspace=obj).count(), 'text')})",
            _plural(obj.trackers.count(), "tracker"),
            _plural(obj.memberships.count(), "membership"),
        ]
    if isinstance(obj, Dataset):
        return [
            _plural(obj.documents.count(), "document") + f" and {_plural(obj.segments.count(), 'text')}",
            f"{_plural(obj.vector_count, 'vector')} and the search index",
            _plural(obj.jobs.count(), "import and embedding job"),
        ]
    lines = []
    for dataset in _datasets(obj):  # a tracker's live traffic (what it kept in production)
        lines.append(f"its dataset '{dataset.name}' ({_plural(dataset.segments.count(), 'text')})")
    return lines


def _receivers_say(signal: Signal, obj: Model) -> list[Any]:
    return [said for _, said in signal.send(sender=type(obj), obj=obj) if said]


def what_goes(obj: Model) -> list[str]:
    """What deleting ``obj`` removes, in sentences, for the page that asks to confirm."""
    lines = _own_lines(obj)
    for said in _receivers_say(describe, obj):
        lines.extend(said)
    return [line for line in lines if not line.startswith("0 ")]


def refusal(obj: Model) -> str | None:
    """Why ``obj`` cannot be deleted now (None: it can)."""
    reasons = _receivers_say(refuse, obj)
    return "; ".join(reasons) if reasons else None


def _files(obj: Model) -> list[Path]:
    paths: list[Path] = []
    for dataset in _datasets(obj):
        paths.append(Path(settings.ARTIFACT_ROOT) / "datasets" / str(dataset.code))
        if dataset.index_file:
            paths.append(Path(dataset.index_file))
        for job_code in Job.objects.filter(dataset=dataset).values_list("code", flat=True):
            paths.append(Path(settings.MEDIA_ROOT) / "uploads" / str(job_code))
    for said in _receivers_say(files_of, obj):
        paths.extend(Path(p) for p in said)
    return paths


def trackers_of(obj: Model) -> list[Tracker]:
    """The trackers that go with ``obj``."""
    if isinstance(obj, Workspace):
        return list(obj.trackers.all())
    if isinstance(obj, Tracker):
        return [obj]
    return []


def _datasets(obj: Model) -> Iterable[Dataset]:
    if isinstance(obj, Workspace):
        return list(obj.datasets.all())
    if isinstance(obj, Dataset):
        return [obj]
    return list(obj.datasets.filter(origin=Dataset.LIVE)) if isinstance(obj, Tracker) else []


_ACTIONS = {
    Workspace: AuditAction.WORKSPACE_DELETED,
    Dataset: AuditAction.DATASET_DELETED,
    Tracker: AuditAction.TRACKER_DELETED,
}


def delete(obj: Workspace | Dataset | Tracker, *, by: User, confirm_name: str) -> list[str]:
    """Delete ``obj`` and everything derived from it, once its owner typed its name; returns what went."""
    workspace = _workspace_of(obj)
    _owner(workspace, by)
    if confirm_name.strip() != obj.name:
        raise errors.Invalid(f"type the name '{obj.name}' to confirm", field="confirm_name")
    with transaction.atomic():
        reason = refusal(obj)
        if reason:
            raise DeletionRefused(reason)
        lines = what_goes(obj)
        paths = _files(obj)
        audit.record(
            _ACTIONS[type(obj)],
            workspace=workspace,
            target=obj.name,
            code=obj.code,
            detail={"removed": lines},
            user=by,
        )
        deleting.send(sender=type(obj), obj=obj)
        owned = list(_datasets(obj)) if isinstance(obj, Tracker) else []
        obj.delete()
        for dataset in owned:  # a tracker's live traffic goes with it
            dataset.delete()
        transaction.on_commit(lambda: remove_files(paths))
    return lines


def remove_files(paths: Iterable[Path]) -> None:
    """Remove files and folders (those already gone are fine); empty parent folders under the
    artifact and upload roots go too."""
    roots = {Path(settings.ARTIFACT_ROOT).resolve(), Path(settings.MEDIA_ROOT).resolve()}
    for path in paths:
        bucket.remove(path)
        try:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        except OSError as exc:
            log.warning("could not remove %s: %s", path, exc)
            continue
        parent = path.resolve().parent
        while parent not in roots and any(root in parent.parents for root in roots):
            try:
                parent.rmdir()  # only when empty
            except OSError:
                break
            parent = parent.parent
