"""The JSON API (OpenAPI at /api/docs): API key or session auth, scoped to workspaces."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Field, File, Form, NinjaAPI, Router, Schema, Status
from ninja.errors import HttpError
from ninja.files import UploadedFile
from ninja.security import APIKeyHeader, HttpBearer, django_auth

from labeling import game, progress
from labeling import services as search_services
from labeling.models import Card
from serving import services as training
from serving.models import ApiKey
from trackers import services
from trackers.models import CAN_IMPORT, CAN_LABEL, Dataset, Job, Membership, Tracker, Workspace


class BearerKey(HttpBearer):
    def authenticate(self, request, token):
        return ApiKey.authenticate(token)


class HeaderKey(APIKeyHeader):
    param_name = "X-API-Key"

    def authenticate(self, request, key):
        return ApiKey.authenticate(key) if key else None


api = NinjaAPI(
    title="Trackers API",
    version="1",
    description="Import corpora, follow jobs and search by meaning. Authenticate with "
    "`Authorization: Bearer <key>` or `X-API-Key: <key>` (keys are made in the admin console), "
    "or with a browser session.",
    auth=[BearerKey(), HeaderKey(), django_auth],
    urls_namespace="api",
)
router = Router()


def _scope(request: HttpRequest):
    """(workspaces visible, role per workspace id) for the caller."""
    if isinstance(request.auth, ApiKey):
        key = request.auth
        return Workspace.objects.filter(pk=key.workspace_id), {key.workspace_id: key.role}
    roles = dict(Membership.objects.filter(user=request.user).values_list("workspace_id", "role"))
    return Workspace.objects.filter(pk__in=roles), roles


def _dataset(request: HttpRequest, code: UUID) -> tuple[Dataset, str]:
    workspaces, roles = _scope(request)
    ds = get_object_or_404(
        Dataset.objects.select_related("workspace").filter(workspace__in=workspaces), code=code
    )
    return ds, roles[ds.workspace_id]


class WorkspaceOut(Schema):
    code: UUID
    name: str


class DatasetIn(Schema):
    name: str
    description: str = ""


class DatasetOut(Schema):
    code: UUID
    name: str
    description: str
    workspace: UUID
    documents: int
    segments: int
    vectors: int
    encoder_id: str
    index_kind: str
    index_size: int

    @staticmethod
    def resolve_workspace(ds: Dataset) -> UUID:
        return ds.workspace.code

    @staticmethod
    def resolve_documents(ds: Dataset) -> int:
        return ds.documents.count()

    @staticmethod
    def resolve_segments(ds: Dataset) -> int:
        return ds.segments.count()

    @staticmethod
    def resolve_vectors(ds: Dataset) -> int:
        return ds.vector_count


class JobOut(Schema):
    code: UUID
    kind: str
    state: str
    processed: int
    total: int
    percent: int
    message: str
    errors: list[dict]
    result: dict
    dataset: UUID | None
    created_at: datetime
    finished_at: datetime | None

    @staticmethod
    def resolve_dataset(job: Job) -> UUID | None:
        return job.dataset.code if job.dataset else None


class SegmentHit(Schema):
    score: float
    text: str
    speaker: str
    position: int
    document: UUID
    document_title: str
    previous: str | None
    next: str | None


class ErrorOut(Schema):
    detail: str


@router.get("/workspaces", response=list[WorkspaceOut], tags=["workspaces"])
def list_workspaces(request):
    """Workspaces the caller can see."""
    workspaces, _ = _scope(request)
    return list(workspaces)


@router.get("/workspaces/{code}/datasets", response=list[DatasetOut], tags=["datasets"])
def list_datasets(request, code: UUID):
    """Datasets of a workspace."""
    workspaces, _ = _scope(request)
    ws = get_object_or_404(workspaces, code=code)
    return list(ws.datasets.select_related("workspace"))


@router.post("/workspaces/{code}/datasets", response={201: DatasetOut, 409: ErrorOut}, tags=["datasets"])
def create_dataset(request, code: UUID, payload: DatasetIn):
    """Create an empty dataset."""
    workspaces, roles = _scope(request)
    ws = get_object_or_404(workspaces, code=code)
    if roles[ws.pk] not in CAN_IMPORT:
        raise HttpError(403, "your role in this workspace does not allow creating datasets")
    if ws.datasets.filter(name=payload.name).exists():
        return Status(409, {"detail": f"a dataset named '{payload.name}' already exists in this workspace"})
    return Status(
        201, services.create_dataset(workspace=ws, name=payload.name, description=payload.description)
    )


@router.get("/datasets/{code}", response=DatasetOut, tags=["datasets"])
def get_dataset(request, code: UUID):
    """A dataset with its counts and index state."""
    return _dataset(request, code)[0]


@router.post("/datasets/{code}/imports", response={202: JobOut, 400: ErrorOut}, tags=["import"])
def import_file(
    request, code: UUID, file: File[UploadedFile], format: Form[str] = "auto", on_error: Form[str] = "reject"
):
    """Upload a CSV, JSONL, transcript or zip file; returns the import job to poll.

    `on_error`: `reject` imports nothing if any row is bad; `skip` imports the good rows and
    lists every skipped row in the job's `errors`.
    """
    ds, role = _dataset(request, code)
    if role not in CAN_IMPORT:
        raise HttpError(403, "your role in this workspace does not allow imports")
    try:
        services.check_upload_size(file.name, file.size)
        job = services.start_import(
            dataset=ds,
            user=request.user if request.user.is_authenticated else None,
            filename=file.name,
            data=file.read(),
            fmt=format,
            on_error=on_error,
        )
    except services.ImportRejected as exc:
        return Status(400, {"detail": str(exc)})
    return Status(202, job)


@router.get("/jobs/{code}", response=JobOut, tags=["jobs"])
def get_job(request, code: UUID):
    """A job's state, progress and errors."""
    workspaces, _ = _scope(request)
    return get_object_or_404(
        Job.objects.select_related("dataset").filter(workspace__in=workspaces), code=code
    )


@router.get("/datasets/{code}/search", response={200: list[SegmentHit], 409: ErrorOut}, tags=["search"])
def search(request, code: UUID, q: str, k: int = 20):
    """Segments closest in meaning to `q`, with their neighbouring utterances."""
    ds, _ = _dataset(request, code)
    if not 1 <= k <= 200:
        raise HttpError(422, "k must be between 1 and 200")
    try:
        hits = search_services.search_segments(ds, q, k=k)
    except search_services.IndexNotReady as exc:
        return Status(409, {"detail": str(exc)})
    return Status(
        200,
        [
            SegmentHit(
                score=h.score,
                text=h.segment.text,
                speaker=h.segment.speaker,
                position=h.segment.position,
                document=h.segment.document.code,
                document_title=h.segment.document.title,
                previous=h.previous.text if h.previous else None,
                next=h.next.text if h.next else None,
            )
            for h in hits
        ],
    )


# --- trackers and the game ---------------------------------------------------------------


class SeedIn(Schema):
    label: str
    text: str


class TrackerIn(Schema):
    name: str
    description: str = ""
    kind: Literal["concept", "topic"] = "concept"
    granularity: Literal["segment", "document"] = "segment"
    labels: list[str] = Field([], description="topic trackers: 2 to 9 label names, in button order")
    datasets: list[UUID]
    seeds: list[str | SeedIn] = Field(
        description="concept: sentences that match; topic: {label, text} objects, at least one per label"
    )
    keywords: list[str] = []
    target_precision: float = 0.8
    round_size: int = 25
    speaker_filter: str = ""


class QualityOut(Schema):
    labels: int
    cv_precision: float | None
    cv_recall: float | None
    cv_f1: float | None
    est_precision: float | None
    est_precision_ci: list[float] | None
    est_recall: float | None
    cv_accuracy: float | None = None
    est_accuracy: float | None = None
    est_accuracy_ci: list[float] | None = None
    threshold: float | None
    featurizer: str


class TrackerOut(Schema):
    code: UUID
    name: str
    description: str
    kind: str
    granularity: str
    labels: list[str]
    state: str
    answers: list[str]
    target_precision: float
    round: dict
    label_counts: dict
    quality: QualityOut | None
    last_trained_at: datetime | None

    @staticmethod
    def resolve_round(tracker: Tracker) -> dict:
        return game.round_progress(tracker)

    @staticmethod
    def resolve_label_counts(tracker: Tracker) -> dict:
        return progress.label_counts(tracker)

    @staticmethod
    def resolve_quality(tracker: Tracker) -> dict | None:
        runs = progress.runs(tracker)
        return progress.quality(runs[-1]) if runs else None


class CardOut(Schema):
    id: int
    round: int
    strategy: str
    score: float | None
    text: str
    speaker: str
    document: UUID
    document_title: str
    previous: str | None
    next: str | None

    @staticmethod
    def resolve_text(card: Card) -> str:
        return card.segment.text

    @staticmethod
    def resolve_speaker(card: Card) -> str:
        return card.segment.speaker

    @staticmethod
    def resolve_document(card: Card) -> UUID:
        return card.segment.document.code

    @staticmethod
    def resolve_document_title(card: Card) -> str:
        return card.segment.document.title

    @staticmethod
    def resolve_previous(card: Card) -> str | None:
        before = _neighbours(card)[0]
        return before.text if before else None

    @staticmethod
    def resolve_next(card: Card) -> str | None:
        after = _neighbours(card)[1]
        return after.text if after else None


def _neighbours(card: Card):
    """The card's surrounding utterances, looked up once per card."""
    if not hasattr(card, "_neighbours"):
        card._neighbours = search_services.neighbours(card.segment)
    return card._neighbours


class LabelIn(Schema):
    card: int
    answer: str


class LabelOut(Schema):
    card: int
    answer: str
    created: bool


class RunOut(Schema):
    code: UUID
    state: str
    label_counts: dict
    featurizer: str
    threshold: float | None
    threshold_rule: str
    metrics: dict
    duration_s: float | None
    error: str
    created_at: datetime
    finished_at: datetime | None


def _tracker(request: HttpRequest, code: UUID, allowed: set[str] | None = None) -> Tracker:
    workspaces, roles = _scope(request)
    tracker = get_object_or_404(
        Tracker.objects.select_related("workspace").filter(workspace__in=workspaces), code=code
    )
    if allowed is not None and roles[tracker.workspace_id] not in allowed:
        raise HttpError(403, "your role in this workspace does not allow this")
    return tracker


def _actor(request: HttpRequest):
    """The user answers are recorded for: the session's, or the one who made the API key."""
    if isinstance(request.auth, ApiKey):
        if request.auth.created_by is None:
            raise HttpError(403, "this API key has no user to label as; create a key from the admin console")
        return request.auth.created_by
    return request.user


@router.get("/workspaces/{code}/trackers", response=list[TrackerOut], tags=["trackers"])
def list_trackers(request, code: UUID):
    """Trackers of a workspace with their state, labels and quality."""
    workspaces, _ = _scope(request)
    ws = get_object_or_404(workspaces, code=code)
    return list(ws.trackers.all())


@router.post("/workspaces/{code}/trackers", response={201: TrackerOut, 400: ErrorOut}, tags=["trackers"])
def create_tracker(request, code: UUID, payload: TrackerIn):
    """Create a tracker from at least 3 example sentences; its first round is chosen at once.

    Concept trackers answer yes/no; topic trackers pick one of ``labels`` (examples name their label).
    ``granularity`` "document" classifies whole documents instead of single segments.
    """
    workspaces, roles = _scope(request)
    ws = get_object_or_404(workspaces, code=code)
    if roles[ws.pk] not in CAN_IMPORT:
        raise HttpError(403, "your role in this workspace does not allow creating trackers")
    datasets = list(ws.datasets.filter(code__in=payload.datasets))
    missing = set(payload.datasets) - {d.code for d in datasets}
    if missing:
        return Status(400, {"detail": f"no dataset {sorted(map(str, missing))[0]} in this workspace"})
    try:
        tracker = services.create_tracker(
            workspace=ws,
            user=_actor(request),
            name=payload.name,
            description=payload.description,
            kind=payload.kind,
            labels=payload.labels,
            granularity=payload.granularity,
            datasets=datasets,
            seeds=[(s.label, s.text) if isinstance(s, SeedIn) else s for s in payload.seeds],
            keywords=payload.keywords,
            target_precision=payload.target_precision,
            round_size=payload.round_size,
            speaker_filter=payload.speaker_filter,
        )
    except services.TrackerInvalid as exc:
        return Status(400, {"detail": str(exc)})
    return Status(201, tracker)


@router.get("/trackers/{code}", response=TrackerOut, tags=["trackers"])
def get_tracker(request, code: UUID):
    """State, label counts, round progress and current quality."""
    return _tracker(request, code)


@router.post("/trackers/{code}/cards", response=list[CardOut], tags=["labeling"])
def next_cards(request, code: UUID, n: int = 2):
    """Claim the next cards to answer (yours first); an empty list while the next round is being prepared."""
    tracker = _tracker(request, code, CAN_LABEL)
    if not 1 <= n <= 50:
        raise HttpError(422, "n must be between 1 and 50")
    return game.claim_cards(tracker, _actor(request), n=n)


@router.post(
    "/trackers/{code}/labels",
    response={200: LabelOut, 201: LabelOut, 400: ErrorOut, 409: ErrorOut},
    tags=["labeling"],
)
def submit_label(request, code: UUID, payload: LabelIn):
    """Answer a card: 201 when recorded, 200 when it repeats the answer already stored (a double submit)."""
    tracker = _tracker(request, code, CAN_LABEL)
    user = _actor(request)
    card = get_object_or_404(Card.objects.select_related("segment"), tracker=tracker, pk=payload.card)
    if game.held_by_another(card, user):
        return Status(409, {"detail": "this card is claimed by another labeler"})
    try:
        annotation, created = game.answer_card(tracker, user, card, payload.answer)
    except game.LabelRejected as exc:
        return Status(400, {"detail": str(exc)})
    return Status(201 if created else 200, LabelOut(card=card.pk, answer=annotation.answer, created=created))


@router.post("/trackers/{code}/undo", response={200: CardOut, 204: None}, tags=["labeling"])
def undo_label(request, code: UUID):
    """Take back your latest answer; its card is yours again."""
    tracker = _tracker(request, code, CAN_LABEL)
    card = game.undo_last(tracker, _actor(request))
    return Status(200, card) if card else Status(204, None)


@router.post("/trackers/{code}/train", response={200: RunOut, 202: RunOut}, tags=["training"])
def train(request, code: UUID):
    """Train on every answer so far: 202 with a new run, 200 with the run that already covers these answers."""
    tracker = _tracker(request, code, CAN_LABEL)
    run, created = training.request_training(tracker)
    run.refresh_from_db()
    return Status(202 if created else 200, run)


@router.get("/trackers/{code}/runs", response=list[RunOut], tags=["training"])
def list_runs(request, code: UUID):
    """Every training run, newest first, with metrics (cross-validated and sample-based)."""
    return list(_tracker(request, code).training_runs.all())


api.add_router("", router)
