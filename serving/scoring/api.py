"""Bulk scoring in the prediction API: start a job on a stored dataset, follow it, read and download
its results, and mark a result right or wrong (the answer joins the tracker's answers)."""

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from ninja import Field, Query, Router, Schema, Status
from ninja.errors import HttpError
from ninja.pagination import paginate
from pydantic import AfterValidator

from serving.models import Feedback, ScoredSegment, ScoringJob
from serving.pagination import Pages
from serving.scoring import services as scoring
from trackers.access import Scope
from trackers.models import CAN_IMPORT, CAN_LABEL
from trackers.text import storable

router = Router(tags=["bulk scoring"])


class ScoreIn(Schema):
    trackers: list[UUID] | None = Field(
        None, max_length=100, description="tracker codes; every live tracker of the workspace if absent"
    )
    min_score: float | None = Field(
        None,
        ge=0,
        le=1,
        description="keep results from this score; each tracker's threshold in use if absent",
    )


class TrackerCounts(Schema):
    tracker: UUID
    name: str
    version: int
    scored: int
    matches: int
    histogram: list[int] = Field(description="scores in 20 equal bins over [0, 1]")
    labels: dict[str, int] | None = None


class ScoringJobOut(Schema):
    code: UUID
    dataset: UUID = Field(alias="dataset.code")
    state: str
    percent: int
    processed: int
    total: int
    message: str
    error: str
    min_score: float | None
    created_at: datetime
    finished_at: datetime | None
    trackers: list[TrackerCounts]

    @staticmethod
    def resolve_trackers(job: ScoringJob, context: Any) -> list[dict[str, Any]]:
        """Each tracker's counts: for a key limited to trackers, only those it may see."""
        limit = Scope.of_request(context["request"]).tracker_ids
        return [
            {"tracker": v.tracker.code, "name": v.tracker.name, "version": v.number, **counts}
            for v, counts in scoring.counts_of(job)
            if limit is None or v.tracker_id in limit
        ]


class ResultOut(Schema):
    id: int
    tracker: UUID = Field(alias="version.tracker.code")
    version: int = Field(alias="version.number")
    score: float
    label: str
    match: bool
    segment: int = Field(alias="segment.id")
    document: UUID = Field(alias="segment.document.code")
    position: int = Field(alias="segment.position")
    speaker: str = Field(alias="segment.speaker")
    text: str = Field(alias="segment.text")
    feedback: str


class FeedbackIn(Schema):
    verdict: Feedback
    label: Annotated[str, Field(max_length=120), AfterValidator(storable)] | None = Field(
        None, description="topics: the right label of a wrong result"
    )


class ResultsQuery(Schema):
    tracker: UUID | None = None
    min_score: float | None = Field(None, ge=0, le=1)
    matches_only: bool = False


def job_in_scope(scope: Scope, code: UUID) -> ScoringJob:
    return scope.find(ScoringJob.objects.select_related("dataset"), workspace="workspace", code=code)


def _results(request: HttpRequest, code: UUID, query: ResultsQuery) -> QuerySet[ScoredSegment]:
    scope = Scope.of_request(request)
    job = job_in_scope(scope, code)
    tracker = scope.tracker(query.tracker) if query.tracker is not None else None
    qs = scoring.results_of(job, tracker=tracker, min_score=query.min_score, matches_only=query.matches_only)
    if scope.tracker_ids is not None:
        qs = qs.filter(version__tracker_id__in=scope.tracker_ids)
    return qs


@router.post("/datasets/{code}/score", operation_id="score_dataset", response={202: ScoringJobOut})
def start(request: HttpRequest, code: UUID, body: ScoreIn) -> Status[Any]:
    """Score a stored dataset with every live tracker (or the chosen ones) as a background job, from
    the vectors its segments already have."""
    scope = Scope.of_request(request)
    dataset = scope.dataset(code, CAN_IMPORT)
    trackers = None
    if body.trackers is not None:
        trackers = [scope.tracker(t) for t in dict.fromkeys(body.trackers)]
    elif scope.tracker_ids is not None:
        trackers = list(dataset.workspace.trackers.filter(pk__in=scope.tracker_ids))
    if any(t.workspace_id != dataset.workspace_id for t in trackers or []):
        raise HttpError(404, "trackers: every tracker must be of the dataset's workspace")
    job = scoring.start_scoring(
        dataset=dataset, user=scope.actor, trackers=trackers, min_score=body.min_score
    )
    return Status(202, job)  # refused: 409


@router.get("/scoring/{code}", operation_id="get_scoring_job", response=ScoringJobOut)
def status(request: HttpRequest, code: UUID) -> ScoringJob:
    """A scoring job's state, progress, and each tracker's counts and score histogram."""
    return job_in_scope(Scope.of_request(request), code)


@router.get("/scoring/{code}/results", operation_id="list_scoring_results", response=list[ResultOut])
@paginate(Pages)
def results(request: HttpRequest, code: UUID, query: Query[ResultsQuery]) -> QuerySet[ScoredSegment]:
    """The job's results, highest score first, filtered by tracker and score."""
    return _results(request, code, query)


@router.get("/scoring/{code}/download", operation_id="download_scoring_results", response={200: None})
def download(
    request: HttpRequest, code: UUID, query: Query[ResultsQuery], format: Literal["csv", "jsonl"] = "csv"
) -> StreamingHttpResponse:
    """Every result as CSV (cells that a spreadsheet would read as formulas are quoted) or JSONL."""
    qs = _results(request, code, query)
    lines = scoring.csv_lines(qs) if format == "csv" else scoring.jsonl_lines(qs)
    response = StreamingHttpResponse(
        lines, content_type="text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    )
    response["Content-Disposition"] = f'attachment; filename="scoring-{code}.{format}"'
    return response


@router.post(
    "/scoring/{code}/results/{result_id}/feedback", operation_id="give_result_feedback", response=ResultOut
)
def feedback(request: HttpRequest, code: UUID, result_id: int, body: FeedbackIn) -> ScoredSegment:
    """Mark a result right or wrong: the answer joins the tracker's answers for its next training run."""
    scope = Scope.of_request(request)
    job = job_in_scope(scope, code)
    result = get_object_or_404(
        ScoredSegment.objects.select_related("version__tracker", "segment__document"), job=job, pk=result_id
    )
    scope.tracker(result.version.tracker.code, CAN_LABEL)
    return scoring.give_feedback(result, scope.actor, body.verdict, body.label)  # refused: 422
