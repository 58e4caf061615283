"""The prediction API (`/api/v1/`): score texts with a tracker's live (or a pinned) model version,
one tracker or many at once, on texts or a whole transcript; health and readiness."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID

import numpy as np
import orjson
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from ninja import Field, Router, Schema, Status
from ninja.errors import HttpError
from pydantic import AfterValidator, BaseModel

from serving import hot, matches
from serving.ml import matching
from serving.ml.artifacts import ArtifactMismatch
from serving.models import EventSource, KeepMode, LiveKeeping, ModelVersion
from serving.versions import runtime, services
from trackers import encoders
from trackers.access import KeyPrincipal, Scope
from trackers.encoders import Encoder, EncoderMismatch
from trackers.models import CAN_IMPORT, Tracker, Workspace
from trackers.text import storable

router = Router(tags=["predict"])
log = logging.getLogger(__name__)

MAX_TEXTS = 64  # texts of one request
TEXT_MAX_CHARS = 10_000
Text = Annotated[str, Field(min_length=1, max_length=TEXT_MAX_CHARS), AfterValidator(storable)]


ALERT_HELP = (
    "matches go to the webhook endpoints that take prediction API matches (an endpoint that opted out "
    "never gets them): absent or true, they do; false, this request alerts none. Asking with true "
    "needs a role that may manage alerts (owner or admin, not a prediction-only key)."
)


class PredictIn(BaseModel):  # plain pydantic: ninja's Schema getter costs more than the check
    texts: list[Text] = Field(min_length=1, max_length=MAX_TEXTS)
    version: int | None = Field(None, ge=1, description="a version number to pin; the live one if absent")
    alert: bool | None = Field(None, description=ALERT_HELP)


# The prediction responses are plain pydantic models: ninja's Schema reads every value through a
# Django-aware getter, which costs more than the model for a response with many trackers.
class TextAnswer(BaseModel):
    score: float
    label: str
    match: bool | None
    scores: dict[str, float] | None = None
    id: str = Field(
        description="this result's id: say whether it was right at POST /predictions/{id}/feedback"
    )


class PredictOut(BaseModel):
    tracker: UUID
    version: int
    live: bool
    threshold: float | None
    threshold_source: str = Field(description="training | owner | none (topics)")
    results: list[TextAnswer]


def _version(tracker: Tracker, number: int | None) -> ModelVersion:
    if number is None:
        live = services.live_version(tracker)
        if live is None:
            raise HttpError(
                409, f"tracker {tracker.code} has no live model version yet: train it, or promote one"
            )
        return live
    return get_object_or_404(services.serving_versions(), tracker=tracker, number=number)


def _scope_key(scope: Scope) -> tuple[Any, ...]:
    return (tuple(sorted(scope.roles.items())), scope.tracker_ids)


def _caller_key(request: HttpRequest) -> tuple[Any, ...]:
    """What the tracker a caller may see depends on: a key's workspace, role and trackers (kept with
    the key, so no membership query), or the signed-in user's memberships."""
    auth = getattr(request, "auth", None)
    if isinstance(auth, KeyPrincipal):
        return ("key", auth.workspace_id, auth.role, auth.tracker_ids)
    return ("user", _scope_key(Scope.of_request(request)))


def _snapshot(request: HttpRequest, named: tuple[str, UUID]) -> hot.Snapshot:
    """The request's snapshot of the workspace it is about: a key's own, or that of the tracker or
    workspace the path names (found once per process: it never changes)."""
    auth = getattr(request, "auth", None)
    if isinstance(auth, KeyPrincipal):
        return hot.snapshot(request, auth.workspace_id)
    kind, code = named
    model = Tracker if kind == "tracker" else Workspace
    field = "workspace_id" if kind == "tracker" else "pk"
    workspace = hot.workspace_of(
        named, lambda: model.objects.filter(code=code).values_list(field, flat=True).first()
    )
    return hot.snapshot(request, workspace)


@dataclass(frozen=True)
class Route:
    """All that scoring with one tracker needs, found once per process and access generation: the
    tracker as its caller may see it, the live (or pinned) version, its checked head, the encoder that
    made its training vectors and the threshold in use. A promotion, a new threshold or a revoked
    right moves the generation, and the next request finds a new route."""

    tracker: Tracker
    version: ModelVersion
    encoder: Encoder
    head: runtime.LoadedHead
    threshold: float | None
    threshold_source: str


def _route(request: HttpRequest, code: UUID, number: int | None) -> Route:
    tracker = Scope.of_request(request).tracker(code)
    version = _version(tracker, number)
    version.tracker = tracker
    encoder = encoders.get_encoder(services.encoder_id_of(tracker))
    threshold, source = services.threshold_of(version)
    return Route(tracker, version, encoder, runtime.head_of(version, encoder.encoder_id), threshold, source)


@router.post("/trackers/{code}/predict", operation_id="predict", response={200: PredictOut})
def predict(request: HttpRequest, code: UUID, body: PredictIn) -> dict[str, Any]:
    """Score one text or a batch with the tracker's live model version (or the pinned one)."""
    started = time.perf_counter()
    snap = _snapshot(request, ("tracker", code))
    route = snap.get(
        ("route", code, _caller_key(request), body.version), lambda: _route(request, code, body.version)
    )
    version = route.version
    _check_alert(request, body.alert, route.tracker.workspace_id)
    vectors = route.encoder.encode(body.texts)
    ids = route.encoder.token_ids(body.texts) if route.head.engine.reads_tokens else None
    answers, decided = runtime.answers(version, route.head, vectors, route.threshold, ids)
    matches.count(
        version, "predict", len(body.texts), int(decided.matched.sum()), time.perf_counter() - started
    )
    matches.announce_scored(
        version,
        lambda: body.texts,
        [a.score for a in answers],
        [a.label for a in answers],
        [a.match if a.match is not None else a.label != "none" for a in answers],  # topics: any label
        source=EventSource.API,
        cache=snap,
        vectors=lambda: vectors,
        encoder_id=route.encoder.encoder_id,
    )
    if body.alert is not False and decided.matched.any():
        hits = functools.partial(_text_hits, decided, body.texts)
        matches.announce(version, hits, source=EventSource.API, cache=snap)
    return {
        "tracker": code,
        "version": version.number,
        "live": version.is_live,
        "threshold": route.threshold,
        "threshold_source": route.threshold_source,
        "results": [
            {**a.__dict__, "id": matches.prediction_id(version, text, _said_yes(a), a.label)}
            for a, text in zip(answers, body.texts, strict=True)
        ],
    }


def _said_yes(answer: Any) -> bool:
    return bool(answer.match) if answer.match is not None else answer.label != "none"


def _check_alert(request: HttpRequest, alert: bool | None, workspace_id: int) -> None:
    """``alert: true`` is asked only by a caller that may manage alerts."""
    if alert is not True:
        return
    scope = Scope.of_request(request)
    if scope.roles.get(workspace_id) not in CAN_IMPORT or (scope.key is not None and scope.key.predict_only):
        raise PermissionDenied(
            "alert: only owners and admins (not prediction-only keys) may ask for alerts; leave it out "
            "and matches go to the endpoints that take prediction API matches"
        )


def _text_hits(decided: matching.Decisions, texts: list[str]) -> list[matches.Hit]:
    """The matches among texts sent to the API."""
    return [
        matches.Hit(score=score, label=label, text=text)
        for score, label, matched, text in zip(
            decided.scores.tolist(), decided.labels, decided.matched.tolist(), texts, strict=True
        )
        if matched
    ]


class HealthOut(Schema):
    status: str


class ReadyOut(Schema):
    status: str
    encoder: str
    live_versions: int


@router.get("/health", operation_id="health", response=HealthOut, auth=None, throttle=[], tags=["health"])
def health(request: HttpRequest) -> dict[str, str]:
    """The process answers (for a load balancer's liveness check)."""
    return {"status": "ok"}


READY_KEEP_S = 1.0  # how long one process keeps its readiness answer: the check runs the encoder
_ready_lock = threading.Lock()
_ready: tuple[float, int, dict[str, Any]] | None = None


def _readiness() -> tuple[int, dict[str, Any]]:
    """Load the encoder and every live version's head; what is not ready, said without the install's
    paths (the full error goes to the log)."""
    try:
        encoder_id = runtime.embed(["ready"], None)[1]
    except Exception as exc:
        log.warning("not ready: the encoder cannot be loaded", exc_info=True)
        return 503, {"status": f"not ready: the encoder cannot be loaded ({type(exc).__name__})"}
    live = list(ModelVersion.objects.filter(is_live=True).select_related("tracker"))
    for version in live:
        try:
            runtime.head_of(version, encoder_id)
        except (ArtifactMismatch, EncoderMismatch) as exc:
            return 503, {"status": f"not ready: {version} cannot serve: {exc}"[:500]}
        except Exception as exc:
            log.warning("not ready: %s cannot be loaded", version, exc_info=True)
            return 503, {"status": f"not ready: {version} cannot be loaded ({type(exc).__name__})"[:500]}
    return 200, {"status": "ready", "encoder": encoder_id, "live_versions": len(live)}


@router.get(
    "/ready",
    operation_id="ready",
    response={200: ReadyOut, 503: ReadyOut},
    auth=None,
    throttle=[],
    tags=["health"],
)
def ready(request: HttpRequest) -> Status[Any]:
    """Ready to predict: the encoder is loaded and every live version's head is checked and loaded
    (the answer is kept for a second, so a flood of checks does not run the encoder each time)."""
    global _ready
    with _ready_lock:
        now = time.monotonic()
        if _ready is None or now - _ready[0] >= READY_KEEP_S:
            _ready = (now, *_readiness())
        _, status, body = _ready
    return Status(status, {"encoder": "", "live_versions": 0, **body})


MAX_TURNS = 2_000  # turns of one transcript
MAX_TRACKERS = 100  # trackers of one request


class Turn(BaseModel):
    speaker: Annotated[str, Field(max_length=120), AfterValidator(storable)] = ""
    text: Text
    start: float | None = None
    end: float | None = None


class Transcript(BaseModel):
    title: Annotated[str, Field(max_length=255), AfterValidator(storable)] = ""
    turns: list[Turn] = Field(min_length=1, max_length=MAX_TURNS)


class ManyIn(BaseModel):
    texts: list[Text] | None = Field(None, min_length=1, max_length=MAX_TEXTS)
    transcript: Transcript | None = Field(None, description="a call in the import JSON shape")
    trackers: list[UUID] | None = Field(
        None,
        max_length=MAX_TRACKERS,
        description="tracker codes; every live tracker of the workspace if absent",
    )
    alert: bool | None = Field(None, description=ALERT_HELP)


TrackerCode = Annotated[str, Field(description="the tracker's code", json_schema_extra={"format": "uuid"})]


class Match(BaseModel):
    tracker: TrackerCode
    version: int
    score: float
    label: str
    id: str | None = Field(
        None, description="a line's match: say whether it was right at POST /predictions/{id}/feedback"
    )


class SegmentMatches(BaseModel):
    position: int
    speaker: str
    text: str
    matches: list[Match]


class TrackerUsed(BaseModel):
    tracker: TrackerCode
    name: str
    granularity: str
    version: int
    threshold: float | None
    threshold_source: str


class ManyOut(BaseModel):
    trackers: list[TrackerUsed]
    segments: list[SegmentMatches]
    documents: list[Match] = Field(description="document trackers' matches for the whole transcript")


@dataclass(frozen=True)
class Part:
    """Versions scored together in one stacked pass, with the concepts' columns and thresholds laid
    out so that one comparison finds every match."""

    versions: list[ModelVersion]
    concept_cols: np.ndarray  # each concept version's output column in the stack
    concept_thresholds: np.ndarray
    concepts: list[ModelVersion]
    topics: list[tuple[int, ModelVersion]]  # (index in ``versions``, version)
    speakers: dict[int, str]  # a segment tracker's speaker filter, by version pk (absent: none)

    @classmethod
    def of(cls, versions: list[ModelVersion], thresholds: dict[int, float | None]) -> Part:
        concepts = [(i, v) for i, v in enumerate(versions) if thresholds[v.pk] is not None]
        # every head before a concept's has one column (concept) or one per label (topic)
        widths = [1 if thresholds[v.pk] is not None else len(v.labels) for v in versions]
        starts = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
        return cls(
            versions=versions,
            concept_cols=starts[[i for i, _ in concepts]] if concepts else np.zeros(0, dtype=np.int64),
            concept_thresholds=np.asarray([thresholds[v.pk] for _, v in concepts], dtype=np.float32),
            concepts=[v for _, v in concepts],
            topics=[(i, v) for i, v in enumerate(versions) if thresholds[v.pk] is None],
            speakers={
                v.pk: v.tracker.speaker_filter
                for v in versions
                if v.tracker.speaker_filter and v.tracker.granularity != "document"
            },
        )


@dataclass(frozen=True)
class ManyPlan:
    """What a many-trackers request scores with, worked out once per process and access generation:
    per encoder, the segment trackers and the document trackers (by speaker filter) as stacked
    parts, and the response's tracker list."""

    groups: list[tuple[str | None, Part | None, list[tuple[str, Part]]]]
    codes: dict[int, str]
    used: bytes  # the response's tracker list (``TrackerUsed``), as JSON


def _plan(scope: Scope, code: UUID, trackers: list[UUID] | None, *, loose_texts: bool) -> ManyPlan:
    ws = scope.workspace(code)
    versions = services.serving_versions().filter(tracker__workspace=ws, is_live=True)
    if scope.tracker_ids is not None:
        versions = versions.filter(tracker_id__in=scope.tracker_ids)
    if trackers is not None:
        versions = versions.filter(tracker__code__in=trackers)
        missing = set(trackers) - {v.tracker.code for v in versions}
        if missing:
            raise HttpError(404, f"no live tracker {sorted(map(str, missing))[0]} in this workspace")
    if loose_texts:  # a document tracker scores whole calls, not loose texts
        versions = versions.exclude(tracker__granularity="document")
    chosen = list(versions)
    encoder_of = services.encoder_ids_of([v.tracker_id for v in chosen])
    by_encoder: dict[str | None, list[ModelVersion]] = {}
    thresholds: dict[int, float | None] = {}
    used: list[TrackerUsed] = []
    for version in chosen:
        by_encoder.setdefault(encoder_of.get(version.tracker_id), []).append(version)
        threshold, source = services.threshold_of(version)
        thresholds[version.pk] = threshold
        used.append(
            TrackerUsed(
                tracker=str(version.tracker.code),
                name=version.tracker.name,
                granularity=version.tracker.granularity,
                version=version.number,
                threshold=threshold,
                threshold_source=source,
            )
        )
    groups = []
    for encoder, group in by_encoder.items():
        segment_level = [v for v in group if v.tracker.granularity != "document"]
        by_filter: dict[str, list[ModelVersion]] = {}
        for version in group:
            if version.tracker.granularity == "document":
                by_filter.setdefault(matching.speaker_key(version.tracker.speaker_filter), []).append(version)
        groups.append(
            (
                encoder,
                Part.of(segment_level, thresholds) if segment_level else None,
                [(speaker, Part.of(same, thresholds)) for speaker, same in by_filter.items()],
            )
        )
    used_json = orjson.dumps([u.model_dump() for u in used])
    return ManyPlan(groups, {v.pk: str(v.tracker.code) for v in chosen}, used_json)


def _keepers(code: UUID) -> frozenset[int]:
    """The trackers of a workspace that keep the texts they score."""
    return frozenset(
        LiveKeeping.objects.filter(tracker__workspace__code=code)
        .exclude(mode=KeepMode.OFF)
        .values_list("tracker_id", flat=True)
    )


def _spoken_rows(
    part: Part, version: ModelVersion, spoken_by: Callable[[str], list[bool]], n: int
) -> list[int]:
    """The rows a segment tracker scores: those its speaker filter lets through (all without one)."""
    wanted = part.speakers.get(version.pk)
    if not wanted:
        return list(range(n))
    ok = spoken_by(wanted)
    return [r for r in range(n) if ok[r]]


@router.post("/workspaces/{code}/predict", operation_id="predict_many", response=ManyOut)
def predict_many(request: HttpRequest, code: UUID, body: ManyIn) -> HttpResponse:
    """Every live tracker of the workspace (or the chosen ones) on texts or on a whole transcript: the
    matches per segment, with position and speaker, and per call for document trackers."""
    started = time.perf_counter()
    if (body.texts is None) == (body.transcript is None):
        raise HttpError(422, "give either 'texts' or 'transcript'")
    scope = Scope.of_request(request)
    if body.alert is True:  # (a lookup only then: this path is kept lean)
        _check_alert(request, body.alert, scope.workspace(code).pk)
    loose = body.transcript is None
    chosen = tuple(t.int for t in body.trackers) if body.trackers is not None else None  # UUIDs hash slowly
    plan_snap = _snapshot(request, ("workspace", code))
    plan = plan_snap.get(
        ("many", code, _scope_key(scope), chosen, loose),
        lambda: _plan(scope, code, body.trackers, loose_texts=loose),
    )
    turns = (
        [Turn(text=t) for t in body.texts] if body.texts is not None else body.transcript.turns  # type: ignore[union-attr]
    )
    texts = [t.text for t in turns]
    documents: list[dict[str, Any]] = []
    per_segment: list[list[dict[str, Any]]] = [[] for _ in turns]
    hits: dict[ModelVersion, list[matches.Hit]] = {}
    matched: dict[ModelVersion, int] = {}
    scored: dict[ModelVersion, int] = {}

    def found(version: ModelVersion, row: int | None, score: float, label: str) -> dict[str, Any]:
        matched[version] = matched.get(version, 0) + 1
        turn = turns[row] if row is not None else None
        if body.alert is not False:
            hits.setdefault(version, []).append(
                matches.Hit(
                    score=score,
                    label=label,
                    text=turn.text if turn else None,
                    position=row if body.transcript is not None else None,
                    speaker=turn.speaker if turn else "",
                )
            )
        return _match(plan, version, score, label, turn.text if turn else None)

    speakers: list[str | None] = (
        [None] * len(turns) if body.transcript is None else [t.speaker for t in turns]
    )
    kept: dict[str, list[bool]] = {}  # a speaker filter's verdict on each turn

    def spoken_by(wanted: str) -> list[bool]:
        if wanted not in kept:
            kept[wanted] = [matching.same_speaker(s, wanted) for s in speakers]
        return kept[wanted]

    # Trackers of this workspace that keep the texts they score (``serving.live``; none by default).
    keepers = plan_snap.get(("keepers", code), lambda: _keepers(code))
    to_announce: list[
        tuple[ModelVersion, list[int], list[float], list[str], list[bool], np.ndarray, str]
    ] = []

    def keep_scored(part: Part, stack: Any, out: np.ndarray, vectors: np.ndarray, encoder_id: str) -> None:
        for j, version in enumerate(part.concepts):
            if version.tracker_id in keepers:
                column = out[:, part.concept_cols[j]]
                verdict = matching.concept_matches(column[:, None], part.concept_thresholds[j : j + 1])[:, 0]
                rows = _spoken_rows(part, version, spoken_by, len(column))
                scores = [float(column[r]) for r in rows]
                to_announce.append(
                    (
                        version,
                        rows,
                        scores,
                        ["yes"] * len(rows),
                        [bool(verdict[r]) for r in rows],
                        vectors,
                        encoder_id,
                    )
                )
        for i, version in part.topics:
            if version.tracker_id in keepers:
                labels = stack.heads[i].manifest["labels"]
                decided = matching.decide(out[:, stack.columns[i]], labels, None, topic=True)
                rows = _spoken_rows(part, version, spoken_by, len(decided.scores))
                to_announce.append(
                    (
                        version,
                        rows,
                        [float(decided.scores[r]) for r in rows],
                        [decided.labels[r] for r in rows],
                        [bool(decided.matched[r]) for r in rows],
                        vectors,
                        encoder_id,
                    )
                )

    def add_matches(
        part: Part,
        encoder_id: str,
        vectors: np.ndarray,
        into: Callable[[int], list[Any]],
        whole: bool = False,
    ) -> None:
        stack = runtime.stack_of(part.versions, encoder_id)
        # Heads that read token n-grams are segment heads (documents train on vectors alone).
        ids = encoders.get_encoder(encoder_id).token_ids(texts) if stack.reads_tokens and not whole else None
        out = stack.matrix(vectors, ids)
        for version in part.versions:
            scored[version] = scored.get(version, 0) + len(vectors)
        if not whole and keepers:  # trackers that keep what they scored: every text, matched or not
            keep_scored(part, stack, out, vectors, encoder_id)
        if len(part.concepts):  # one comparison for every concept's column at its threshold
            rows, which = np.nonzero(
                matching.concept_matches(out[:, part.concept_cols], part.concept_thresholds)
            )
            for row, j in zip(rows.tolist(), which.tolist(), strict=True):
                version = part.concepts[j]
                if (wanted := part.speakers.get(version.pk)) and not spoken_by(wanted)[row]:
                    continue
                score = float(out[row, part.concept_cols[j]])
                into(row).append(found(version, None if whole else row, score, "yes"))
        for i, version in part.topics:  # every text with a label, its most likely one
            labels = stack.heads[i].manifest["labels"]
            decided = matching.decide(out[:, stack.columns[i]], labels, None, topic=True)
            ok = spoken_by(wanted) if (wanted := part.speakers.get(version.pk)) else None
            for row in np.flatnonzero(decided.matched).tolist():
                if ok is None or ok[row]:
                    score = float(decided.scores[row])
                    into(row).append(found(version, None if whole else row, score, decided.labels[row]))

    for encoder, segment_part, document_parts in plan.groups:
        vectors, encoder_id = runtime.embed(texts, encoder)  # each text embedded once per encoder
        if segment_part is not None:
            add_matches(segment_part, encoder_id, vectors, per_segment.__getitem__)
        for speaker, part in document_parts:
            lines = [i for i, ok in enumerate(spoken_by(speaker)) if ok]
            if not lines:
                continue
            call = matching.document_vector(vectors[lines])
            add_matches(part, encoder_id, call, lambda _: documents, whole=True)
    took = time.perf_counter() - started
    for version, n in scored.items():
        matches.count(version, "many", n, matched.get(version, 0), took)
    for version, rows, scores, labels, verdicts, held, held_by in to_announce:
        matches.announce_scored(
            version,
            functools.partial(lambda rows: [texts[r] for r in rows], rows),
            scores,
            labels,
            verdicts,
            source=EventSource.API,
            cache=plan_snap,
            vectors=functools.partial(lambda held, rows: held[rows], held, rows),
            encoder_id=held_by,
        )
    if hits:  # to subscribers (alerts), written with the request; a worker delivers them
        transcript = {"title": body.transcript.title} if body.transcript is not None else None
        for version, found_by in hits.items():
            matches.announce(
                version, found_by.copy, source=EventSource.API, document=transcript, cache=plan_snap
            )
    # Written here, not by the response model: its tracker list, checked once when the plan was made,
    # would otherwise be validated and serialized again on every request (a third of the time for a
    # hundred trackers). Every value below has the type ``ManyOut`` gives it.
    body_json = orjson.dumps(
        {
            "trackers": orjson.Fragment(plan.used),
            "segments": [
                {"position": i, "speaker": t.speaker, "text": t.text, "matches": per_segment[i]}
                for i, t in enumerate(turns)
            ],
            "documents": documents,
        }
    )
    return HttpResponse(body_json, content_type="application/json")


def _match(
    plan: ManyPlan, version: ModelVersion, score: float, label: str, text: str | None
) -> dict[str, Any]:
    found = {"tracker": plan.codes[version.pk], "version": version.number, "score": score, "label": label}
    if text is not None:  # a line's match (a whole document's has no one text to say right or wrong about)
        found["id"] = matches.prediction_id(version, text, True, label)
    return found
