"""One rule for a match (serving.ml.matching): every path that decides one agrees on a transcript."""

from __future__ import annotations

import json

import numpy as np
import pytest
from django.test import TestCase

from labeling import game
from labeling import services as labeling_services
from labeling.ml import training
from serving.ml import matching
from serving.models import EventSource, ScoredSegment, WebhookEvent
from serving.scoring import services as scoring
from serving.versions import services
from serving.webhooks.services import create_endpoint
from tests.factories import DatasetFactory
from tests.test_documents import CANCEL_LINES, calls_tracker, is_cancel
from tests.test_topics import play_round
from tests.test_versions import many, predict
from trackers import imports
from trackers.models import WorkState

# --- the rule, on arrays --------------------------------------------------------------------


def test_a_speaker_is_the_same_whatever_its_case_and_spaces_and_an_unknown_one_passes():
    assert matching.same_speaker("Customer ", "customer")
    assert matching.same_speaker("STRASSE", "straße")  # case-folded, not only lower-cased
    assert not matching.same_speaker("agent", "customer") and not matching.same_speaker("", "customer")
    assert matching.same_speaker("agent", "")  # no filter
    assert matching.same_speaker(None, "customer")  # a loose text: its speaker is unknown


def test_a_concept_matches_at_its_threshold_as_float32_and_a_topics_none_never_does():
    out = np.array([[np.float32(0.7)], [np.nextafter(np.float32(0.7), np.float32(0))]], dtype=np.float32)
    decided = matching.decide(out, ["no", "yes"], 0.7, topic=False)
    assert decided.matched.tolist() == [True, False] and decided.labels == ["yes", "no"]
    topics = matching.decide(
        np.array([[0.2, 0.8], [0.9, 0.1]], dtype=np.float32), ["none", "billing"], None, topic=True
    )
    assert topics.labels == ["billing", "none"] and topics.matched.tolist() == [True, False]
    with pytest.raises(ValueError, match="threshold"):
        matching.decide(out, ["no", "yes"], None, topic=False)


def test_a_documents_vector_is_the_same_from_lines_read_at_once_or_in_chunks():
    lines = np.random.default_rng(3).standard_normal((7, 16)).astype(np.float32)
    at_once = matching.document_vector(lines)
    sums = np.zeros((1, 16))
    for chunk in (lines[:3], lines[3:5], lines[5:]):  # bulk scoring reads lines a chunk at a time
        matching.add_lines(sums, np.zeros(len(chunk), dtype=np.int64), chunk)
    assert at_once.dtype == np.float32 and np.array_equal(matching.document_vectors(sums), at_once)
    assert np.linalg.norm(at_once) == pytest.approx(1.0, abs=1e-6)


# --- one transcript through every path ------------------------------------------------------

TURNS = [
    {"speaker": "Agent", "text": "I want to cancel my subscription (agent reads it back)"},
    {"speaker": "Customer", "text": "I want to cancel my subscription right now"},
    {"speaker": "agent", "text": "let me pull up your account"},
    {"speaker": "customer ", "text": "please cancel the contract before it renews"},
    {"speaker": "AGENT", "text": "we are going to cancel the service for you"},
    {"speaker": "CUSTOMER", "text": "the dashboard export is slow"},
]
CUSTOMER = [1, 3, 5]  # the turns a "customer" filter keeps, whatever their spelling


def is_cancel_line(text: str) -> bool:
    return any(text.startswith(line) for line in CANCEL_LINES)


@pytest.mark.parametrize("features", ["embedding", "ngrams"])
def test_one_transcript_gets_the_same_matches_and_scores_on_every_path(
    client, dataset, workspace, owner, key, monkeypatch, features
):
    """Single predict, many predict, bulk scoring and the alerts they send, for a segment tracker
    and a document tracker that both keep the customer's lines only; the segment tracker's heads
    read the sentence vector alone, or beside the lines' token n-grams."""
    monkeypatch.setattr(training, "FEATURIZERS", (features,))
    calls = calls_tracker(dataset, owner, workspace, speaker_filter="customer")
    lines = labeling_services.create_tracker(
        workspace=workspace,
        user=owner,
        name="Customer asks to cancel",
        speaker_filter="customer",
        datasets=[dataset],
        seeds=["I want to cancel my subscription", "please cancel the contract", "cancel the service"],
        round_size=10,
    )
    for _ in range(2):
        play_round(calls, owner, lambda card: "yes" if is_cancel(card.segment.document) else "no")
        play_round(lines, owner, lambda card: "yes" if is_cancel_line(card.segment.text) else "no")
    for tracker in (calls, lines):
        assert services.live_version(tracker) is not None
        create_endpoint(tracker=tracker, url="https://8.8.8.8/hooks", user=None, from_api=True)
    assert services.live_version(lines).training_run.featurizer == features
    assert services.live_version(calls).training_run.featurizer == "embedding"  # documents: vectors

    # 1. the prediction API, one tracker: the lines its filter keeps, sent as texts
    single = predict(client, lines, key, texts=[TURNS[i]["text"] for i in CUSTOMER]).json()["results"]
    by_single = {i: r["score"] for i, r in zip(CUSTOMER, single, strict=True) if r["match"]}
    assert by_single, "the customer's cancellations match"

    # 2. the prediction API, many trackers, the whole transcript
    body = many(client, workspace, key, transcript={"title": "a call", "turns": TURNS}).json()
    by_many = {
        s["position"]: m["score"]
        for s in body["segments"]
        for m in s["matches"]
        if m["tracker"] == str(lines.code)
    }
    assert by_many == by_single  # the agent's cancellation lines are not the customer's: no match
    (doc_many,) = [d["score"] for d in body["documents"] if d["tracker"] == str(calls.code)]

    # 3. bulk scoring of the same call, stored
    stored = DatasetFactory(workspace=workspace, name="Stored calls")
    row = json.dumps({"id": "call-x", "title": "a call", "turns": TURNS}) + "\n"
    with TestCase.captureOnCommitCallbacks(execute=True):
        imports.start_import(dataset=stored, user=owner, filename="x.jsonl", data=row.encode())
    stored.refresh_from_db()
    with TestCase.captureOnCommitCallbacks(execute=True):  # the job runs on commit (eager in tests)
        job = scoring.start_scoring(dataset=stored, user=owner, trackers=[calls, lines], min_score=0.0)
    job.refresh_from_db()
    assert job.state == WorkState.SUCCEEDED, job.message
    results = ScoredSegment.objects.filter(job=job).select_related("segment", "version__tracker")
    by_bulk = {r.segment.position: r.score for r in results if r.version.tracker == lines and r.match}
    assert {r.segment.position for r in results if r.version.tracker == lines} == set(CUSTOMER)
    assert by_bulk == by_many
    (doc_bulk,) = [r for r in results if r.version.tracker == calls]
    assert doc_bulk.match and doc_bulk.score == doc_many
    assert doc_bulk.segment.position == CUSTOMER[0]  # a call's result sits on its first kept line

    # 4. the alerts each path sent: the same matches, with the same scores
    def alerted(tracker, source) -> dict:
        events = WebhookEvent.objects.filter(tracker=tracker, source=source).order_by("pk")
        return {
            (m["position"] if m["position"] is not None else m["text"]): m["score"]
            for e in events
            for m in e.payload["data"]["matches"]
        }

    api = alerted(lines, EventSource.API)
    rounded = {i: round(s, 6) for i, s in by_many.items()}
    assert {k: v for k, v in api.items() if isinstance(k, int)} == rounded  # the transcript's
    assert {TURNS[i]["text"]: s for i, s in rounded.items()} == {
        k: v for k, v in api.items() if isinstance(k, str)
    }
    # the import scored the new call on its own (and alerted); the job above found it alerted already
    assert alerted(lines, EventSource.IMPORT) == rounded and not alerted(lines, EventSource.BULK)
    (doc_event,) = WebhookEvent.objects.filter(tracker=calls, source=EventSource.IMPORT)
    assert doc_event.payload["data"]["score"] == round(doc_many, 6)

    # the game's pool keeps the same lines of the stored call
    learner = labeling_services.create_tracker(
        workspace=workspace,
        user=owner,
        name="Learns from the stored call",
        speaker_filter="customer",
        datasets=[stored],
        seeds=["I want to cancel my subscription", "please cancel", "cancel the service"],
    )
    assert sorted(game.eligible_segments(learner).values_list("position", flat=True)) == CUSTOMER
