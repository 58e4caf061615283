"""Model versions in the prediction API: list them, promote one and roll back."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Field, Router, Schema

from serving.models import ModelVersion
from serving.versions import services
from trackers.access import Scope
from trackers.models import CAN_IMPORT

router = Router(tags=["versions"])


class VersionOut(Schema):
    number: int
    code: UUID
    kind: str
    labels: list[str]
    featurizer: str = Field(alias="training_run.featurizer")
    threshold: float | None
    quality: float | None
    is_live: bool
    went_live_at: datetime | None
    created_at: datetime
    label_counts: dict[str, Any] = Field(alias="training_run.label_counts")
    metrics: dict[str, Any] = Field(alias="training_run.metrics")


@router.get(
    "/trackers/{code}/versions", operation_id="list_versions", response=list[VersionOut], tags=["versions"]
)
def versions(request: HttpRequest, code: UUID) -> list[ModelVersion]:
    """Every model version of the tracker, newest first."""
    tracker = Scope.of_request(request).tracker(code)
    return list(ModelVersion.objects.filter(tracker=tracker).select_related("tracker", "training_run"))


@router.post(
    "/trackers/{code}/versions/{number}/promote",
    operation_id="promote_version",
    response=VersionOut,
    tags=["versions"],
)
def promote(request: HttpRequest, code: UUID, number: int) -> ModelVersion:
    """Make this version the live one (promote a newer one, or roll back to an older one); a version
    whose files fail their checksums is refused (409), saying why."""
    scope = Scope.of_request(request)
    tracker = scope.tracker(code, CAN_IMPORT)
    version = get_object_or_404(ModelVersion, tracker=tracker, number=number)
    return services.promote(version, scope.actor)  # refused: 409
