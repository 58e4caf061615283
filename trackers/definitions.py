"""Tracker definitions: a tracker's name, kind, labels, examples, datasets and filters, checked."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction

from trackers import audit, errors
from trackers.models import (
    AuditAction,
    Dataset,
    Tracker,
    Workspace,
)
from trackers.services import DESCRIPTION_MAX_CHARS, NAME_MAX_CHARS, checked_text

if TYPE_CHECKING:
    from django.contrib.auth.models import User


log = logging.getLogger(__name__)

MAX_SEEDS = 100  # example sentences of one tracker
MAX_KEYWORDS = 50
KEYWORD_MAX_CHARS = 100


# --- trackers ----------------------------------------------------------------------------

MIN_SEEDS = 3


class TrackerInvalid(errors.Invalid):
    """A tracker definition that cannot be used, with the reason."""


MAX_TOPIC_LABELS = 9  # one key each, 1 to 9


def clean_topic_labels(labels: list[str]) -> list[str]:
    """Topic label names, checked: 2 to 9 distinct and short."""
    names = [" ".join(n.split()) for n in labels if n and n.strip()]
    if not 2 <= len(names) <= MAX_TOPIC_LABELS:
        raise TrackerInvalid(f"a topic tracker needs 2 to {MAX_TOPIC_LABELS} labels (got {len(names)})")
    lowered = [n.lower() for n in names]
    repeated = next((n for i, n in enumerate(names) if lowered.index(n.lower()) != i), None)
    if repeated:
        raise TrackerInvalid(f"label '{repeated}' is given twice")
    too_long = next((n for n in names if len(n) > 40), None)
    if too_long:
        raise TrackerInvalid(f"label '{too_long[:40]}…' is longer than 40 characters")
    return names


def define_tracker(
    *,
    workspace: Workspace,
    user: User | None,
    name: str,
    datasets: list[Dataset],
    seeds: Sequence[str | tuple[str, str]],
    description: str = "",
    kind: str = "concept",
    labels: list[str] | None = None,
    granularity: str = "segment",
    keywords: list[str] | None = None,
    target_precision: float = 0.8,
    round_size: int = 25,
    speaker_filter: str = "",
) -> Tracker:
    """A tracker with its example sentences, checked; the learning loop (``labeling``) starts it.

    ``seeds`` are sentences (concept trackers: examples of a match) or, for topic trackers,
    (label, sentence) pairs with at least one example per label.
    """
    from trackers.models import Granularity, SeedExample, TrackerKind, TrackerState

    name = checked_text(" ".join(name.split()), "name", NAME_MAX_CHARS, TrackerInvalid)
    if not name:
        raise TrackerInvalid("name is empty")
    description = checked_text(description.strip(), "description", DESCRIPTION_MAX_CHARS, TrackerInvalid)
    speaker_filter = checked_text(speaker_filter.strip(), "speaker", NAME_MAX_CHARS, TrackerInvalid)
    if len(seeds) > MAX_SEEDS:
        raise TrackerInvalid(f"give at most {MAX_SEEDS} example sentences (got {len(seeds):,})")
    keywords = [k.strip() for k in (keywords or []) if k and k.strip()]
    if len(keywords) > MAX_KEYWORDS:
        raise TrackerInvalid(f"give at most {MAX_KEYWORDS} keywords (got {len(keywords):,})")
    for i, k in enumerate(keywords, 1):
        checked_text(k, f"keyword {i}", KEYWORD_MAX_CHARS, TrackerInvalid)
    for i, label in enumerate(labels or [], 1):
        checked_text(str(label), f"label {i}", NAME_MAX_CHARS, TrackerInvalid)
    for i, seed in enumerate(seeds, 1):
        for part in [seed] if isinstance(seed, str) else list(seed):
            checked_text(str(part), f"example {i}", settings.SEGMENT_MAX_CHARS, TrackerInvalid)
    if kind not in TrackerKind.values:
        raise TrackerInvalid(f"kind must be one of {', '.join(TrackerKind.values)} (got '{kind}')")
    if granularity not in Granularity.values:
        raise TrackerInvalid(
            f"granularity must be one of {', '.join(Granularity.values)} (got '{granularity}')"
        )
    if kind == TrackerKind.TOPIC:
        labels = clean_topic_labels(labels or [])
        bare = next((s for s in seeds if isinstance(s, str)), None)
        if bare is not None:
            raise TrackerInvalid(f"topic examples need a label: '{bare[:60]}' has none")
        labelled = (s for s in seeds if not isinstance(s, str))  # all of them, checked just above
        pairs = [(str(lab).strip(), " ".join(str(t).split())) for lab, t in labelled if t and str(t).strip()]
        by_name = {n.lower(): n for n in labels}
        unknown = next((lab for lab, _ in pairs if lab.lower() not in by_name), None)
        if unknown is not None:
            raise TrackerInvalid(f"example label '{unknown}' is not one of the labels ({', '.join(labels)})")
        pairs = [(by_name[lab.lower()], t) for lab, t in pairs]
        missing = [n for n in labels if n not in {lab for lab, _ in pairs}]
        if missing:
            raise TrackerInvalid(f"give at least one example for every label; '{missing[0]}' has none")
    else:
        labels = []
        texts = [s[1] if isinstance(s, tuple | list) else s for s in seeds]
        pairs = [("yes", " ".join(t.split())) for t in texts if t and t.strip()]
    if len(pairs) < MIN_SEEDS:
        raise TrackerInvalid(f"give at least {MIN_SEEDS} example sentences (got {len(pairs)})")
    too_long = [i + 1 for i, (_, s) in enumerate(pairs) if len(s) > settings.SEGMENT_MAX_CHARS]
    if too_long:
        raise TrackerInvalid(
            f"example {too_long[0]} is longer than {settings.SEGMENT_MAX_CHARS:,} characters"
        )
    if not datasets:
        raise TrackerInvalid("choose at least one dataset")
    foreign = [d.name for d in datasets if d.workspace_id != workspace.pk]
    if foreign:
        raise TrackerInvalid(f"dataset '{foreign[0]}' is not in this workspace")
    unembedded = [d.name for d in datasets if not d.vector_count]
    if unembedded:
        raise TrackerInvalid(
            f"dataset '{unembedded[0]}' has no embedded segments yet; import and embed a file first"
        )
    if len({d.encoder_id for d in datasets}) > 1:
        raise TrackerInvalid("these datasets were embedded by different encoders and cannot share a tracker")
    if not 0.05 <= target_precision <= 0.999:
        raise TrackerInvalid("target precision must be between 0.05 and 0.999")
    if not 5 <= round_size <= 200:
        raise TrackerInvalid("round size must be between 5 and 200 cards")
    if Tracker.objects.filter(workspace=workspace, name=name).exists():
        raise TrackerInvalid(f"a tracker named '{name}' already exists in this workspace")
    with transaction.atomic():
        tracker = Tracker.objects.create(
            workspace=workspace,
            name=name,
            description=description,
            kind=kind,
            labels=labels,
            granularity=granularity,
            created_by=user,
            keywords=keywords,
            target_precision=target_precision,
            round_size=round_size,
            speaker_filter=speaker_filter.strip(),
            state=TrackerState.LABELING,
        )
        tracker.datasets.set(datasets)
        SeedExample.objects.bulk_create([SeedExample(tracker=tracker, text=t, label=lab) for lab, t in pairs])
    return tracker


EDITABLE = ("name", "description", "target_precision", "round_size")


def change_tracker(tracker: Tracker, *, by: Any = None, **changes: Any) -> Tracker:
    """Rename a tracker, or change its description, target precision (the threshold training picks
    for the next version) or round size; checked as on creation, recorded in the audit log."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise TrackerInvalid(f"cannot change {', '.join(sorted(unknown))}; only {', '.join(EDITABLE)}")
    new = {k: v for k, v in changes.items() if v is not None}
    if "name" in new:
        new["name"] = checked_text(" ".join(str(new["name"]).split()), "name", NAME_MAX_CHARS, TrackerInvalid)
        if not new["name"]:
            raise TrackerInvalid("name is empty", field="name")
        if (
            Tracker.objects.filter(workspace=tracker.workspace, name=new["name"])
            .exclude(pk=tracker.pk)
            .exists()
        ):
            raise TrackerInvalid(
                f"a tracker named '{new['name']}' already exists in this workspace", field="name"
            )
    if "description" in new:
        new["description"] = checked_text(
            str(new["description"]).strip(), "description", DESCRIPTION_MAX_CHARS, TrackerInvalid
        )
    if "target_precision" in new and not 0.05 <= float(new["target_precision"]) <= 0.999:
        raise TrackerInvalid("target precision must be between 0.05 and 0.999", field="target_precision")
    if "round_size" in new and not 5 <= int(new["round_size"]) <= 200:
        raise TrackerInvalid("round size must be between 5 and 200 cards", field="round_size")
    changed = {k: [getattr(tracker, k), v] for k, v in new.items() if getattr(tracker, k) != v}
    if not changed:
        return tracker
    with transaction.atomic():
        for k, (_, v) in changed.items():
            setattr(tracker, k, v)
        tracker.save(update_fields=list(changed))
        audit.record(
            AuditAction.TRACKER_CHANGED,
            workspace=tracker.workspace,
            target=tracker.name,
            code=tracker.code,
            detail={"changed": changed},
            user=by,
        )
    return tracker
