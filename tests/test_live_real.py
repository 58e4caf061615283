"""The loop from production back to the game with the real ONNX encoder: texts the API scored are
kept with the vectors it computed, join the live traffic dataset, are found by meaning, come back
as a review round, and take feedback by prediction id."""

from __future__ import annotations

import json

import numpy as np
import pytest
from django.test import TestCase
from django.urls import reverse

from labeling.models import Card
from serving.live import services as live
from serving.models import KeepMode, LiveText
from tests.test_versions import predict, real_trained_tracker
from trackers import encoders, search
from trackers.models import Dataset, Segment

pytestmark = [pytest.mark.real_encoder, pytest.mark.django_db]

SERVED = (
    [
        "I would like to terminate my membership",
        "please stop charging me, I am leaving",
        "how do I close my account for good",
        "the new dashboard looks great",
        "can we move the call to Thursday",
        "the invoice total is wrong",
    ]
    * 1
    + [f"cancel order number {i} and refund me" for i in range(12)]
    + [f"lunch at {i} sounds fine" for i in range(12)]
)


def test_live_texts_with_the_real_encoder_are_kept_found_reviewed_and_answered(
    client, dataset, workspace, owner, key
):
    tracker = real_trained_tracker(dataset, workspace, owner, rounds=2)
    live.set_keeping(tracker, mode=KeepMode.ALL, per_day=1000, by=owner)
    body = predict(client, tracker, key, texts=SERVED).json()
    assert LiveText.objects.filter(tracker=tracker, vector__isnull=False).count() == len(SERVED)
    with TestCase.captureOnCommitCallbacks(execute=True):  # the search index builds on commit
        assert live.gather(tracker) == len(SERVED)
    dataset_live = tracker.datasets.get(origin=Dataset.LIVE)
    segments = list(Segment.objects.filter(dataset=dataset_live).order_by("id"))
    stored = live.vector_store(dataset_live).get([s.vector_row for s in segments])
    fresh = encoders.get_encoder(dataset_live.encoder_id).encode([s.text for s in segments])
    assert np.allclose(stored, fresh, atol=1e-5)  # the prediction's vectors, not new ones
    hits = search.search_segments(
        Dataset.objects.get(pk=dataset_live.pk), "I want to end my subscription", k=3
    )
    assert hits[0].segment.text in SERVED[:3]  # found by meaning, not by words
    client.force_login(owner)
    response = client.post(reverse("tracker-live-review", args=[tracker.code]))
    assert response.status_code == 302
    cards = Card.objects.filter(tracker=tracker, answered_at__isnull=True, segment__dataset=dataset_live)
    assert cards.count() == tracker.round_size
    result = body["results"][3]  # "the new dashboard looks great"
    response = client.post(
        f"/api/v1/predictions/{result['id']}/feedback",
        json.dumps({"verdict": "right"}),
        content_type="application/json",
        headers=key,
    )
    assert response.status_code == 200, response.content
    assert response.json()["answers"] == [{"text": SERVED[3], "answer": "yes" if result["match"] else "no"}]
