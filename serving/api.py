"""The prediction API (`/api/v1/`): score texts with a tracker's live (or a pinned) model version,
list versions, promote and roll back, manage the workspace's API keys, health and readiness."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from django.shortcuts import get_object_or_404
from django.utils import timezone
from ninja import Field, Router, Schema, Status
from ninja.errors import HttpError
from pydantic import AfterValidator

from serving import runtime, services
from serving.models import ApiKey, ModelVersion
from trackers.access import Scope
from trackers.models import CAN_IMPORT
from trackers.text import storable

router = Router(tags=["predict"])

MAX_TEXTS = 64  # texts of one request
TEXT_MAX_CHARS = 10_000
Text = Annotated[str, Field(min_length=1, max_length=TEXT_MAX_CHARS), AfterValidator(storable)]


class PredictIn(Schema):
    texts: list[Text] = Field(min_length=1, max_length=MAX_TEXTS)
    version: int | None = Field(None, ge=1, description="a version number to pin; the live one if absent")


class TextAnswer(Schema):
    score: float
    label: str
    match: bool | None
    scores: dict[str, float] | None = None


class PredictOut(Schema):
    tracker: UUID
    version: int
    live: bool
    threshold: float | None
    threshold_source: str = Field(description="training | owner | none (topics)")
    results: list[TextAnswer]


class VersionOut(Schema):
    number: int
    code: UUID
    kind: str
    labels: list[str]
    featurizer: str
    threshold: float | None
    quality: float | None
    is_live: bool
    went_live_at: datetime | None
    created_at: datetime
    label_counts: dict
    metrics: dict


def _version(tracker, number: int | None) -> ModelVersion:
    if number is None:
        live = services.live_version(tracker)
        if live is None:
            raise HttpError(
                409, f"tracker {tracker.code} has no live model version yet: train it, or promote one"
            )
        return live
    return get_object_or_404(ModelVersion.objects.select_related("tracker"), tracker=tracker, number=number)


@router.post("/trackers/{code}/predict", response={200: PredictOut})
def predict(request, code: UUID, body: PredictIn):
    """Score one text or a batch with the tracker's live model version (or the pinned one)."""
    tracker = Scope.of_request(request).tracker(code)
    version = _version(tracker, body.version)
    version.tracker = tracker
    vectors, encoder_id = runtime.embed(body.texts, services.encoder_id_of(tracker))
    head = runtime.head_of(version, encoder_id)
    threshold, source = services.threshold_of(version)
    return {
        "tracker": tracker.code,
        "version": version.number,
        "live": version.is_live,
        "threshold": threshold,
        "threshold_source": source,
        "results": [a.__dict__ for a in runtime.answers(version, head, vectors, threshold)],
    }


@router.get("/trackers/{code}/versions", response=list[VersionOut], tags=["versions"])
def versions(request, code: UUID):
    """Every model version of the tracker, newest first."""
    tracker = Scope.of_request(request).tracker(code)
    return list(ModelVersion.objects.filter(tracker=tracker))


@router.post("/trackers/{code}/versions/{number}/promote", response=VersionOut, tags=["versions"])
def promote(request, code: UUID, number: int):
    """Make this version the live one (promote a newer one, or roll back to an older one)."""
    scope = Scope.of_request(request)
    tracker = scope.tracker(code, CAN_IMPORT)
    version = get_object_or_404(ModelVersion, tracker=tracker, number=number)
    return services.promote(version, scope.actor)


class HealthOut(Schema):
    status: str


class ReadyOut(Schema):
    status: str
    encoder: str
    live_versions: int


@router.get("/health", response=HealthOut, auth=None, throttle=[], tags=["health"])
def health(request):
    """The process answers (for a load balancer's liveness check)."""
    return {"status": "ok"}


@router.get("/ready", response={200: ReadyOut, 503: ReadyOut}, auth=None, throttle=[], tags=["health"])
def ready(request):
    """Ready to predict: the encoder is loaded and every live version's head is checked and loaded."""
    try:
        encoder_id = runtime.embed(["ready"], None)[1]
        live = list(ModelVersion.objects.filter(is_live=True).select_related("tracker"))
        for version in live:
            runtime.head_of(version, encoder_id)
    except Exception as exc:  # told to the caller: this process must not get traffic yet
        return Status(
            503,
            {"status": f"not ready: {type(exc).__name__}: {exc}"[:500], "encoder": "", "live_versions": 0},
        )
    return {"status": "ready", "encoder": encoder_id, "live_versions": len(live)}


class KeyIn(Schema):
    name: Annotated[str, Field(min_length=1, max_length=120), AfterValidator(storable)]
    role: str = Field("labeler", pattern="^(owner|admin|labeler|viewer)$")
    predict_only: bool = False
    trackers: list[UUID] = Field(default_factory=list, max_length=100, description="none: every tracker")


class KeyOut(Schema):
    id: int
    name: str
    prefix: str
    role: str
    predict_only: bool
    trackers: list[UUID]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @staticmethod
    def resolve_trackers(key: ApiKey) -> list[UUID]:
        return [t.code for t in key.trackers.all()]


class NewKeyOut(KeyOut):
    key: str = Field(description="the secret, shown this once")


@router.get("/workspaces/{code}/keys", response=list[KeyOut], tags=["keys"])
def list_keys(request, code: UUID):
    """The workspace's API keys (never their secrets)."""
    ws = Scope.of_request(request).workspace(code, CAN_IMPORT)
    return list(ApiKey.objects.filter(workspace=ws).prefetch_related("trackers"))


@router.post("/workspaces/{code}/keys", response={201: NewKeyOut}, tags=["keys"])
def create_key(request, code: UUID, body: KeyIn):
    """A new key acting as the caller, optionally limited to some trackers and to prediction."""
    scope = Scope.of_request(request)
    ws = scope.workspace(code, CAN_IMPORT)
    trackers = list(ws.trackers.filter(code__in=body.trackers))
    if len(trackers) != len(set(body.trackers)):
        raise HttpError(422, "trackers: every code must be a tracker of this workspace")
    key, raw = ApiKey.issue(
        workspace=ws,
        name=body.name,
        created_by=scope.actor,
        role=body.role,
        trackers=trackers,
        predict_only=body.predict_only,
    )
    key.key = raw  # type: ignore[attr-defined]  # the response's only copy of the secret
    return Status(201, key)


@router.post("/workspaces/{code}/keys/{key_id}/revoke", response=KeyOut, tags=["keys"])
def revoke_key(request, code: UUID, key_id: int):
    """Revoke a key: it stops working at once."""
    ws = Scope.of_request(request).workspace(code, CAN_IMPORT)
    key = get_object_or_404(ApiKey, workspace=ws, pk=key_id)
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key
