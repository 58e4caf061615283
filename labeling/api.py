"""The learning-loop API: trackers, cards, answers, undo, training runs."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Literal
from uuid import UUID

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Field, Router, Schema, Status
from ninja.errors import HttpError

from labeling import game, progress, services
from labeling.models import Card
from trackers import search
from trackers.access import Scope
from trackers.api import Description, ErrorOut, Keyword, Name, Sentence, ShortText
from trackers.definitions import MAX_KEYWORDS, MAX_SEEDS, MAX_TOPIC_LABELS, TrackerInvalid
from trackers.models import CAN_IMPORT, CAN_LABEL, Segment, Tracker

router = Router()


class SeedIn(Schema):
    label: ShortText
    text: Sentence


class TrackerIn(Schema):
    name: Name
    description: Description = ""
    kind: Literal["concept", "topic"] = "concept"
    granularity: Literal["segment", "document"] = "segment"
    labels: list[ShortText] = Field(
        [], max_length=MAX_TOPIC_LABELS, description="topic trackers: 2 to 9 label names, in button order"
    )
    datasets: list[UUID] = Field(max_length=50)
    seeds: list[Sentence | SeedIn] = Field(
        max_length=MAX_SEEDS,
        description="concept: sentences that match; topic: {label, text} objects, at least one per label",
    )
    keywords: list[Keyword] = Field([], max_length=MAX_KEYWORDS)
    target_precision: float = 0.8
    round_size: int = 25
    speaker_filter: ShortText = ""


class QualityOut(Schema):
    """Quality at the threshold in use. ``precision``, ``recall``, ``f1`` (concepts) and ``accuracy``
    (topics) are estimated over every text of the tracker, each with its 95% interval; ``cv_*`` are
    cross-validated on the answers (biased by active learning, shown for comparison)."""

    labels: int
    precision: float | None
    precision_ci: list[float] | None
    precision_exact: bool
    recall: float | None
    recall_ci: list[float] | None
    f1: float | None
    f1_ci: list[float] | None
    accuracy: float | None = None
    accuracy_ci: list[float] | None = None
    cv_precision: float | None
    cv_recall: float | None
    cv_f1: float | None
    cv_accuracy: float | None = None
    threshold: float | None = Field(
        description="the threshold in use: the live version's (the owner's if set, else training's); "
        "while no version is live, the one training chose"
    )
    training_threshold: float | None
    threshold_set_by: Literal["owner", "training"]
    featurizer: str
    live: bool = Field(description="these are the live version's numbers (false: no version is live yet)")
    version: int | None = Field(description="the live version's number")
    recall_width: float | None = Field(None, description="the width of recall's 95% interval")
    check_offered: bool = Field(
        False,
        description="recall's interval is wider than 0.2: a check round (POST .../check) would narrow it",
    )


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
    no_model: str | None = Field(description="why the latest training left no model, if it did not")
    last_trained_at: datetime | None

    @staticmethod
    def resolve_round(tracker: Tracker) -> dict:
        return game.round_progress(tracker)

    @staticmethod
    def resolve_label_counts(tracker: Tracker) -> dict:
        return progress.label_counts(tracker)

    @staticmethod
    def resolve_quality(tracker: Tracker) -> dict | None:
        return progress.tracker_quality(tracker)

    @staticmethod
    def resolve_no_model(tracker: Tracker) -> str | None:
        return progress.no_model_reason(tracker)


class CardOut(Schema):
    id: int
    round: int
    strategy: str
    score: float | None
    label: str = Field(
        description="a topic tracker's predicted label for the text (empty: none yet, or a concept)"
    )
    probability: float | None = Field(
        None,
        description="the chance the text had of being drawn for its round; the estimates weigh its answer by it",
    )
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


def _neighbours(card: Card) -> tuple[Segment | None, Segment | None]:
    """The card's surrounding utterances, looked up once per card."""
    if not hasattr(card, "_neighbours"):
        card._neighbours = search.neighbours(card.segment)
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
    attempt: int
    attempts: int
    label_counts: dict
    featurizer: str
    threshold: float | None
    threshold_rule: str
    metrics: dict
    duration_s: float | None
    error: str
    created_at: datetime
    finished_at: datetime | None


def _tracker(request: HttpRequest, code: UUID, allowed: Collection[str] | None = None) -> Tracker:
    return Scope.of_request(request).tracker(code, allowed)


def _actor(request: HttpRequest):
    """The user answers are recorded for: the session's, or the one who made the API key."""
    actor = Scope.of_request(request).actor
    if actor is None:
        raise HttpError(
            403, "this API key has no user to label as; create a key on the workspace's API keys page"
        )
    return actor


@router.get(
    "/workspaces/{code}/trackers", operation_id="list_trackers", response=list[TrackerOut], tags=["trackers"]
)
def list_trackers(request, code: UUID):
    """Trackers of a workspace with their state, labels and quality."""
    scope = Scope.of_request(request)
    trackers = scope.workspace(code).trackers.all()
    if scope.tracker_ids is not None:  # a key limited to some trackers lists only those
        trackers = trackers.filter(pk__in=scope.tracker_ids)
    return list(trackers)


@router.post(
    "/workspaces/{code}/trackers",
    operation_id="create_tracker",
    response={201: TrackerOut, 422: ErrorOut},
    tags=["trackers"],
)
def create_tracker(request, code: UUID, payload: TrackerIn):
    """Create a tracker from at least 3 example sentences; its first round is chosen at once.

    Concept trackers answer yes/no; topic trackers pick one of ``labels`` (examples name their label).
    ``granularity`` "document" classifies whole documents instead of single segments.
    """
    ws = Scope.of_request(request).workspace(code, CAN_IMPORT)
    datasets = list(ws.datasets.filter(code__in=payload.datasets))
    missing = set(payload.datasets) - {d.code for d in datasets}
    if missing:
        raise TrackerInvalid(f"no dataset {sorted(map(str, missing))[0]} in this workspace", field="datasets")
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
    )  # refused: 422
    return Status(201, tracker)


@router.get("/trackers/{code}", operation_id="get_tracker", response=TrackerOut, tags=["trackers"])
def get_tracker(request, code: UUID):
    """State, label counts, round progress and current quality."""
    return _tracker(request, code)


@router.post("/trackers/{code}/cards", operation_id="claim_cards", response=list[CardOut], tags=["labeling"])
def next_cards(request, code: UUID, n: int = 2):
    """Claim the next cards to answer (yours first); an empty list while the next round is being prepared."""
    tracker = _tracker(request, code, CAN_LABEL)
    if not 1 <= n <= 50:
        raise HttpError(422, "n must be between 1 and 50")
    return game.claim_cards(tracker, _actor(request), n=n)


@router.post(
    "/trackers/{code}/labels",
    operation_id="submit_label",
    response={200: LabelOut, 201: LabelOut, 409: ErrorOut, 422: ErrorOut},
    tags=["labeling"],
)
def submit_label(request, code: UUID, payload: LabelIn):
    """Answer a card: 201 when recorded, 200 when it repeats the answer already stored (a double submit)."""
    tracker = _tracker(request, code, CAN_LABEL)
    user = _actor(request)
    card = get_object_or_404(Card.objects.select_related("segment"), tracker=tracker, pk=payload.card)
    annotation, created = services.answer_card(tracker, user, card, payload.answer)  # refusals: 409, 422
    return Status(201 if created else 200, LabelOut(card=card.pk, answer=annotation.answer, created=created))


@router.post(
    "/trackers/{code}/undo", operation_id="undo_label", response={200: CardOut, 204: None}, tags=["labeling"]
)
def undo_label(request, code: UUID):
    """Take back your latest answer; its card is yours again."""
    tracker = _tracker(request, code, CAN_LABEL)
    card = game.undo_last(tracker, _actor(request))
    return Status(200, card) if card else Status(204, None)


@router.post(
    "/trackers/{code}/train",
    operation_id="train_tracker",
    response={200: RunOut, 202: RunOut, 409: ErrorOut},
    tags=["training"],
)
def train(request, code: UUID):
    """Train on every answer so far: 202 with a new run, 200 with the run that already covers these
    answers. After a failed run this makes a new attempt; 409 once these answers have failed too often."""
    tracker = _tracker(request, code, CAN_LABEL)
    run, created = services.request_training(tracker)  # refused: 409
    run.refresh_from_db()
    return Status(202 if created else 200, run)


@router.post(
    "/trackers/{code}/check",
    operation_id="start_check_round",
    response={201: list[CardOut], 409: ErrorOut},
    tags=["labeling"],
)
def check(request, code: UUID):
    """Check what the model misses: put up to 20 cards from just below the live version's threshold
    (the latest model's while none is live), drawn with known probabilities, in place of the open
    round's cards nobody holds. 409 for a topic tracker, without a model, or with nothing left below."""
    tracker = _tracker(request, code, CAN_LABEL)
    quality = progress.tracker_quality(tracker) or {}
    cards = services.start_check_round(tracker, quality.get("run"), quality.get("threshold"))  # refused: 409
    return Status(201, cards)


@router.get("/trackers/{code}/runs", operation_id="list_runs", response=list[RunOut], tags=["training"])
def list_runs(request, code: UUID):
    """Every training run, newest first, with metrics (cross-validated and sample-based)."""
    return list(_tracker(request, code).training_runs.all())
