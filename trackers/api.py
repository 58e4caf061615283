"""The corpus API: workspaces, datasets, imports, jobs and search by meaning."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from ninja import Field, File, Form, Router, Schema, Status
from ninja.errors import HttpError
from ninja.files import UploadedFile
from pydantic import AfterValidator

from trackers import definitions, imports, search, services
from trackers.access import Scope
from trackers.http import PerKeyRate
from trackers.models import CAN_IMPORT, Dataset, Job
from trackers.text import storable

router = Router()

# Text a request may carry: bounded, and only characters the database can store (422 names the field).
Name = Annotated[str, Field(min_length=1, max_length=services.NAME_MAX_CHARS), AfterValidator(storable)]
Description = Annotated[str, Field(max_length=services.DESCRIPTION_MAX_CHARS), AfterValidator(storable)]
ShortText = Annotated[str, Field(max_length=services.NAME_MAX_CHARS), AfterValidator(storable)]
Keyword = Annotated[str, Field(max_length=definitions.KEYWORD_MAX_CHARS), AfterValidator(storable)]
Sentence = Annotated[str, Field(max_length=10_000), AfterValidator(storable)]


class WorkspaceOut(Schema):
    code: UUID
    name: str


class DatasetIn(Schema):
    name: Name
    description: Description = ""


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
    field: str | None = Field(None, description="the field that was refused, when it is one")


@router.get("/workspaces", operation_id="list_workspaces", response=list[WorkspaceOut], tags=["workspaces"])
def list_workspaces(request):
    """Workspaces the caller can see."""
    return list(Scope.of_request(request).workspaces)


@router.get(
    "/workspaces/{code}/datasets", operation_id="list_datasets", response=list[DatasetOut], tags=["datasets"]
)
def list_datasets(request, code: UUID):
    """Datasets of a workspace."""
    ws = Scope.of_request(request).workspace(code)
    return list(ws.datasets.select_related("workspace"))


@router.post(
    "/workspaces/{code}/datasets",
    operation_id="create_dataset",
    response={201: DatasetOut, 409: ErrorOut, 422: ErrorOut},
    tags=["datasets"],
)
def create_dataset(request, code: UUID, payload: DatasetIn):
    """Create an empty dataset."""
    ws = Scope.of_request(request).workspace(code, CAN_IMPORT)
    if ws.datasets.filter(name=payload.name).exists():
        return Status(409, {"detail": f"a dataset named '{payload.name}' already exists in this workspace"})
    dataset = services.create_dataset(workspace=ws, name=payload.name, description=payload.description)
    return Status(201, dataset)  # refused: 422


@router.get("/datasets/{code}", operation_id="get_dataset", response=DatasetOut, tags=["datasets"])
def get_dataset(request, code: UUID):
    """A dataset with its counts and index state."""
    return Scope.of_request(request).dataset(code)


@router.post(
    "/datasets/{code}/imports",
    operation_id="start_import",
    response={202: JobOut, 422: ErrorOut},
    tags=["import"],
)
def import_file(
    request, code: UUID, file: File[UploadedFile], format: Form[str] = "auto", on_error: Form[str] = "reject"
):
    """Upload a CSV, JSONL, transcript or zip file; returns the import job to poll.

    `on_error`: `reject` imports nothing if any row is bad; `skip` imports the good rows and
    lists every skipped row in the job's `errors`.
    """
    ds = Scope.of_request(request).dataset(code, CAN_IMPORT)
    filename = file.name or "upload"
    imports.check_upload_size(filename, file.size or 0)  # start_import checks the size read too
    job = imports.start_import(  # refused: 422
        dataset=ds,
        user=Scope.of_request(request).actor,
        filename=filename,
        data=file.read(),
        fmt=format,
        on_error=on_error,
    )
    return Status(202, job)


@router.get("/jobs/{code}", operation_id="get_job", response=JobOut, tags=["jobs"])
def get_job(request, code: UUID):
    """A job's state, progress and errors."""
    return Scope.of_request(request).job(code)


# Search runs the encoder: a rate of its own besides the API's.
@router.get(
    "/datasets/{code}/search",
    operation_id="search_dataset",
    response={200: list[SegmentHit], 409: ErrorOut},
    tags=["search"],
    throttle=[PerKeyRate("api", "API_RATE"), PerKeyRate("api-search", "API_SEARCH_RATE")],
)
def search_dataset(request, code: UUID, q: str, k: int = 20):
    """Segments closest in meaning to `q`, with their neighbouring utterances."""
    ds = Scope.of_request(request).dataset(code)
    if not 1 <= k <= 200:
        raise HttpError(422, "k must be between 1 and 200")
    try:
        hits = search.search_segments(ds, q, k=k)
    except search.IndexNotReady as exc:
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
