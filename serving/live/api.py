"""Feedback from where live decisions land, in the prediction API: right or wrong on an alert's
event (its ``webhook-id``) or on one result of a prediction response (its ``id``). Keys need the
labeler role or above: a verdict is also an answer that trains the tracker."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from django.http import Http404, HttpRequest
from ninja import Field, Router, Schema
from pydantic import AfterValidator

from serving import matches
from serving.live import feedback
from serving.models import LiveFeedback, ModelVersion, WebhookEvent
from trackers.access import Scope
from trackers.models import CAN_LABEL
from trackers.text import storable

router = Router(tags=["feedback"])


Label = Annotated[str, Field(max_length=120), AfterValidator(storable)]
Said = Annotated[str, Field(max_length=20_000), AfterValidator(storable)]


class FeedbackIn(Schema):
    verdict: Literal["right", "wrong"]
    label: Label | None = Field(None, description="a topic tracker's wrong: the right label")
    text: Said | None = Field(
        None, description="a prediction's text, when the tracker did not keep it (it must be the text scored)"
    )


class AnswerOut(Schema):
    text: str
    answer: str


class FeedbackOut(Schema):
    tracker: uuid.UUID
    verdict: str
    answers: list[AnswerOut]


def _out(rows: list[LiveFeedback], verdict: str) -> dict[str, Any]:
    return {
        "tracker": rows[0].tracker.code,
        "verdict": verdict,
        "answers": [{"text": r.text, "answer": r.answer} for r in rows],
    }


def _via(scope: Scope) -> str:
    return f"API key {scope.key.prefix}" if scope.key is not None else "API"


@router.post("/events/{event_id}/feedback", operation_id="give_event_feedback", response=FeedbackOut)
def event_feedback(request: HttpRequest, event_id: str, body: FeedbackIn) -> dict[str, Any]:
    """Say whether an alert was right, by the ``webhook-id`` its receiver holds (``msg_…``): every text
    it told about becomes the caller's answer (right: a match; wrong: not one)."""
    try:
        code = uuid.UUID(hex=event_id.removeprefix("msg_"))
    except ValueError as exc:
        raise Http404("no event has this id") from exc
    scope = Scope.of_request(request)
    event = scope.find(
        WebhookEvent.objects.select_related("tracker"),
        workspace="tracker__workspace",
        tracker="tracker",
        allowed=CAN_LABEL,
        code=code,
    )
    version, decisions = feedback.decisions_of_event(event)
    rows = feedback.give(
        event.tracker,
        decisions,
        verdict=body.verdict,
        user=scope.actor,
        version=version,
        event=event,
        label=body.label,
        via=_via(scope),
    )
    return _out(rows, body.verdict)


@router.post(
    "/predictions/{prediction_id}/feedback", operation_id="give_prediction_feedback", response=FeedbackOut
)
def prediction_feedback(request: HttpRequest, prediction_id: str, body: FeedbackIn) -> dict[str, Any]:
    """Say whether one result of a prediction response was right, by the ``id`` it came with. The
    text is found if the tracker kept it; else send it back as ``text``."""
    said = matches.read_prediction_id(prediction_id)
    scope = Scope.of_request(request)
    version = scope.find(
        ModelVersion.objects.select_related("tracker"),
        workspace="tracker__workspace",
        tracker="tracker",
        allowed=CAN_LABEL,
        pk=said.version_id,
    )
    tracker = version.tracker
    decision = feedback.decision_of_prediction(tracker, said, body.text)
    rows = feedback.give(
        tracker,
        [decision],
        verdict=body.verdict,
        user=scope.actor,
        version=version,
        prediction=prediction_id,
        label=body.label,
        via=_via(scope),
    )
    return _out(rows, body.verdict)
