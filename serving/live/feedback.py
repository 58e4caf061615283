"""Right or wrong, from where a live decision landed: an alert's event (by its ``webhook-id``) or one
text of a prediction response (by the ``id`` the response gave it).

Each verdict is also the caller's answer for the tracker, so the next version learns from it: on a
yes/no tracker, *right* on a match and *wrong* on a non-match are "yes", the other two "no"; on a
topic tracker *right* is the predicted label and *wrong* names the right one. A text that is not in
one of the tracker's datasets joins its "live traffic" dataset, with its vector.

A prediction id (``serving.matches.prediction_id``) names the version, whether the text matched, its
label and a digest of the text, signed. The text itself is not in it: when the tracker kept the text
it is found; otherwise the caller sends it back, and it must match the digest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import transaction
from django.utils import timezone

from labeling import game
from labeling.models import Strategy
from serving.live import services as live
from serving.matches import Said, digest
from serving.models import EventType, Feedback, LiveFeedback, LiveText, ModelVersion, WebhookEvent
from serving.versions.services import encoder_id_of
from trackers import encoders, errors
from trackers.models import Segment, Tracker, TrackerKind


class FeedbackRefused(errors.Invalid):
    """A verdict that cannot be taken (which field, and why)."""


@dataclass(frozen=True)
class Decision:
    """One live decision to say right or wrong about."""

    text: str
    matched: bool
    label: str
    score: float | None = None


def _answer(tracker: Tracker, decision: Decision, verdict: str, label: str | None) -> str:
    if verdict not in Feedback.values:
        raise FeedbackRefused(f"'{verdict}' is not a verdict; expected right or wrong", field="verdict")
    if tracker.kind == TrackerKind.TOPIC:
        if verdict == Feedback.RIGHT:
            return decision.label
        if not label or label == decision.label or label not in tracker.answers:
            raise FeedbackRefused(
                f"say which label is right instead of '{decision.label}': one of {', '.join(tracker.answers)}",
                field="label",
            )
        return label
    said_yes = decision.matched == (verdict == Feedback.RIGHT)
    return "yes" if said_yes else "no"


def _segments_for(tracker: Tracker, decisions: list[Decision]) -> list[Segment]:
    """Each decision's text as a segment the tracker learns from: the same text in one of its
    datasets (a kept live text joins its "live traffic" dataset first), or else a new line of that
    dataset, embedded now."""
    hashes = [live.sha1(d.text) for d in decisions]
    waiting = LiveText.objects.filter(
        tracker=tracker,
        segment__isnull=True,
        vector__isnull=False,
        text_hash__in=[hashlib.sha256(d.text.encode()).hexdigest() for d in decisions],
    )
    if waiting.exists():
        live.gather(tracker)
    found: dict[str, Segment] = {}
    for segment in Segment.objects.filter(
        dataset__in=tracker.datasets.all(), text_hash__in=set(hashes), vector_row__isnull=False
    ).order_by("id"):
        found.setdefault(segment.text_hash, segment)
    missing: list[int] = []
    for i, h in enumerate(hashes):
        if h not in found and all(hashes[j] != h for j in missing):
            missing.append(i)
    if missing:
        encoder = encoders.get_encoder(encoder_id_of(tracker))
        vectors = np.asarray(encoder.encode([decisions[i].text for i in missing]), dtype=np.float32)
        dataset = live.live_dataset(tracker)
        now = timezone.now()
        with transaction.atomic():
            made = live.join(
                dataset,
                [
                    live.Joining(
                        text=decisions[i].text,
                        vector=vectors[k],
                        metadata={
                            "score": decisions[i].score,
                            "matched": decisions[i].matched,
                            "source": "feedback",
                        },
                        at=now,
                        external_id="feedback",
                    )
                    for k, i in enumerate(missing)
                ],
                encoder.encoder_id,
            )
        for i, segment in zip(missing, made, strict=True):
            found[hashes[i]] = segment
    return [found[h] for h in hashes]


def give(
    tracker: Tracker,
    decisions: list[Decision],
    *,
    verdict: str,
    user: Any,
    version: ModelVersion | None,
    event: WebhookEvent | None = None,
    prediction: str = "",
    label: str | None = None,
    via: str = "",
) -> list[LiveFeedback]:
    """Record a verdict on live decisions, and the answers it means (``_answer``)."""
    if user is None:
        raise errors.Conflict("this key's maker no longer exists: answers need a person to be recorded under")
    answers = [_answer(tracker, d, verdict, label) for d in decisions]
    segments = _segments_for(tracker, decisions)
    rows = []
    with transaction.atomic():
        for d, answer, segment in zip(decisions, answers, segments, strict=True):
            if not tracker.datasets.filter(pk=segment.dataset_id).exists():
                tracker.datasets.add(segment.dataset_id)
            game.record_label(tracker, user, segment=segment, answer=answer, strategy=Strategy.FEEDBACK)
            row, _ = LiveFeedback.objects.update_or_create(
                tracker=tracker,
                event=event,
                prediction_id=prediction,
                segment=segment,
                defaults={
                    "version": version,
                    "text": d.text,
                    "score": d.score,
                    "matched": d.matched,
                    "verdict": verdict,
                    "answer": answer,
                    "given_by": user,
                    "via": via,
                    "created_at": timezone.now(),
                },
            )
            rows.append(row)
    return rows


def decisions_of_event(event: WebhookEvent) -> tuple[ModelVersion | None, list[Decision]]:
    """The matches an alert told about: every text of its payload (a document's lines too)."""
    if event.type != EventType.MATCH:
        raise FeedbackRefused(f"event {event.webhook_id} is a {event.type} event, not a match", field="id")
    data = event.payload.get("data", {})
    version = ModelVersion.objects.filter(tracker=event.tracker, number=data.get("model_version")).first()
    decisions = [
        Decision(text=m["text"], matched=True, label=m.get("label", "yes"), score=m.get("score"))
        for m in data.get("matches", [])
        if m.get("text")
    ]
    if not decisions:
        raise FeedbackRefused(f"event {event.webhook_id} names no text to answer about", field="id")
    return version, decisions


def decision_of_prediction(tracker: Tracker, said: Said, text: str | None) -> Decision:
    """The text a prediction id names: the caller's (checked against its digest), or the kept one."""
    if text is not None:
        if digest(text) != said.digest:
            raise FeedbackRefused("this is not the text the prediction scored", field="text")
        found = text
    else:
        kept = [
            t for t in LiveText.objects.filter(tracker=tracker).filter(text_hash__startswith=said.digest)[:1]
        ]
        if not kept:
            raise FeedbackRefused(
                "this tracker did not keep the text (keeping is off, or it was not in the sample, or "
                "it expired); send it back as `text`",
                field="text",
            )
        found = kept[0].text
    kept_score = (
        LiveText.objects.filter(
            tracker=tracker, version_id=said.version_id, text_hash__startswith=said.digest
        )
        .values_list("score", flat=True)
        .first()
    )
    return Decision(text=found, matched=said.matched, label=said.label or "yes", score=kept_score)
