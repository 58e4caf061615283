"""The JSON API (OpenAPI at /api/docs): API key or session auth, scoped to workspaces."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import File, Form, NinjaAPI, Router, Schema, Status
from ninja.errors import HttpError
from ninja.files import UploadedFile
from ninja.security import APIKeyHeader, HttpBearer, django_auth

from labeling import services as search_services
from serving.models import ApiKey
from trackers import services
from trackers.models import CAN_IMPORT, Dataset, Job, Membership, Workspace


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


def _dataset_out(ds: Dataset) -> DatasetOut:
    return DatasetOut(
        code=ds.code,
        name=ds.name,
        description=ds.description,
        workspace=ds.workspace.code,
        documents=ds.documents.count(),
        segments=ds.segments.count(),
        vectors=ds.vector_count,
        encoder_id=ds.encoder_id,
        index_kind=ds.index_kind,
        index_size=ds.index_size,
    )


def _job_out(job: Job) -> JobOut:
    return JobOut(
        code=job.code,
        kind=job.kind,
        state=job.state,
        processed=job.processed,
        total=job.total,
        percent=job.percent,
        message=job.message,
        errors=job.errors,
        result=job.result,
        dataset=job.dataset.code if job.dataset else None,
        created_at=job.created_at,
        finished_at=job.finished_at,
    )


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
    return [_dataset_out(ds) for ds in ws.datasets.select_related("workspace")]


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
        201,
        _dataset_out(
            services.create_dataset(workspace=ws, name=payload.name, description=payload.description)
        ),
    )


@router.get("/datasets/{code}", response=DatasetOut, tags=["datasets"])
def get_dataset(request, code: UUID):
    """A dataset with its counts and index state."""
    ds, _ = _dataset(request, code)
    return _dataset_out(ds)


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
    return Status(202, _job_out(job))


@router.get("/jobs/{code}", response=JobOut, tags=["jobs"])
def get_job(request, code: UUID):
    """A job's state, progress and errors."""
    workspaces, _ = _scope(request)
    return _job_out(
        get_object_or_404(Job.objects.select_related("dataset").filter(workspace__in=workspaces), code=code)
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


api.add_router("", router)
