"""The prediction API (`/api/v1/`): score texts with a tracker's live (or a pinned) model version,
list versions, promote and roll back, manage the workspace's API keys, health and readiness."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import numpy as np
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
    featurizer: str = Field(alias="training_run.featurizer")
    threshold: float | None
    quality: float | None
    is_live: bool
    went_live_at: datetime | None
    created_at: datetime
    label_counts: dict = Field(alias="training_run.label_counts")
    metrics: dict = Field(alias="training_run.metrics")


def _version(tracker, number: int | None) -> ModelVersion:
    if number is None:
        live = services.live_version(tracker)
        if live is None:
            raise HttpError(
                409, f"tracker {tracker.code} has no live model version yet: train it, or promote one"
            )
        return live
    return get_object_or_404(services.serving_versions(), tracker=tracker, number=number)


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
    return list(ModelVersion.objects.filter(tracker=tracker).select_related("tracker", "training_run"))


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


MAX_TURNS = 2_000  # turns of one transcript
MAX_TRACKERS = 100  # trackers of one request


class Turn(Schema):
    speaker: Annotated[str, Field(max_length=120), AfterValidator(storable)] = ""
    text: Text
    start: float | None = None
    end: float | None = None


class Transcript(Schema):
    title: Annotated[str, Field(max_length=255), AfterValidator(storable)] = ""
    turns: list[Turn] = Field(min_length=1, max_length=MAX_TURNS)


class ManyIn(Schema):
    texts: list[Text] | None = Field(None, min_length=1, max_length=MAX_TEXTS)
    transcript: Transcript | None = Field(None, description="a call in the import JSON shape")
    trackers: list[UUID] | None = Field(
        None,
        max_length=MAX_TRACKERS,
        description="tracker codes; every live tracker of the workspace if absent",
    )


class Match(Schema):
    tracker: UUID
    version: int
    score: float
    label: str


class SegmentMatches(Schema):
    position: int
    speaker: str
    text: str
    matches: list[Match]


class TrackerUsed(Schema):
    tracker: UUID
    name: str
    granularity: str
    version: int
    threshold: float | None
    threshold_source: str


class ManyOut(Schema):
    trackers: list[TrackerUsed]
    segments: list[SegmentMatches]
    documents: list[Match] = Field(description="document trackers' matches for the whole transcript")


def _is_match(answer: runtime.Answer) -> bool:
    return bool(answer.match) if answer.match is not None else answer.label != "none"


def _match(version: ModelVersion, answer: runtime.Answer) -> dict:
    return {
        "tracker": version.tracker.code,
        "version": version.number,
        "score": answer.score,
        "label": answer.label,
    }


@router.post("/workspaces/{code}/predict", response=ManyOut)
def predict_many(request, code: UUID, body: ManyIn):
    """Every live tracker of the workspace (or the chosen ones) on texts or on a whole transcript: the
    matches per segment, with position and speaker, and per call for document trackers."""
    if (body.texts is None) == (body.transcript is None):
        raise HttpError(422, "give either 'texts' or 'transcript'")
    scope = Scope.of_request(request)
    ws = scope.workspace(code)
    versions = services.serving_versions().filter(tracker__workspace=ws, is_live=True)
    if scope.tracker_ids is not None:
        versions = versions.filter(tracker_id__in=scope.tracker_ids)
    if body.trackers is not None:
        versions = versions.filter(tracker__code__in=body.trackers)
        missing = set(body.trackers) - {v.tracker.code for v in versions}
        if missing:
            raise HttpError(404, f"no live tracker {sorted(map(str, missing))[0]} in this workspace")
    turns = (
        [Turn(text=t) for t in body.texts] if body.texts is not None else body.transcript.turns  # type: ignore[union-attr]
    )
    texts = [t.text for t in turns]
    if body.transcript is None:  # a document tracker scores whole calls, not loose texts
        versions = versions.exclude(tracker__granularity="document")
    chosen = list(versions)
    used, documents = [], []
    per_segment: list[list[dict]] = [[] for _ in turns]
    encoder_of = services.encoder_ids_of([v.tracker_id for v in chosen])
    by_encoder: dict[str | None, list[ModelVersion]] = {}
    for version in chosen:
        by_encoder.setdefault(encoder_of.get(version.tracker_id), []).append(version)
    for encoder, group in by_encoder.items():
        vectors, encoder_id = runtime.embed(texts, encoder)  # each text embedded once per encoder
        segment_level = [v for v in group if v.tracker.granularity != "document"]
        if segment_level:
            stack = runtime.stack_of(segment_level, encoder_id)
            for version, head, out in zip(segment_level, stack.heads, stack.scores(vectors), strict=True):
                threshold, _ = services.threshold_of(version)
                for i, answer in enumerate(
                    runtime.answers_from(version, head.manifest["labels"], out, threshold)
                ):
                    if _is_match(answer):
                        per_segment[i].append(_match(version, answer))
        by_filter: dict[str, list[ModelVersion]] = {}
        for version in group:
            if version.tracker.granularity == "document":
                by_filter.setdefault(version.tracker.speaker_filter.lower(), []).append(version)
        for speaker, same in by_filter.items():
            lines = [i for i, t in enumerate(turns) if not speaker or t.speaker.lower() == speaker]
            if not lines:
                continue
            total = vectors[lines].sum(axis=0)
            call = (total / max(float(np.linalg.norm(total)), 1e-12)).astype(np.float32)[None, :]
            stack = runtime.stack_of(same, encoder_id)
            for version, head, out in zip(same, stack.heads, stack.scores(call), strict=True):
                threshold, _ = services.threshold_of(version)
                answer = runtime.answers_from(version, head.manifest["labels"], out, threshold)[0]
                if _is_match(answer):
                    documents.append(_match(version, answer))
    for version in chosen:
        threshold, source = services.threshold_of(version)
        used.append(
            {
                "tracker": version.tracker.code,
                "name": version.tracker.name,
                "granularity": version.tracker.granularity,
                "version": version.number,
                "threshold": threshold,
                "threshold_source": source,
            }
        )
    return {
        "trackers": used,
        "segments": [
            {"position": i, "speaker": t.speaker, "text": t.text, "matches": per_segment[i]}
            for i, t in enumerate(turns)
        ],
        "documents": documents,
    }
