"""Keeping what a live tracker saw: off by default (nothing stored), every text or a sample of at
most N a day with each text's chance of being kept, expiry, and who may choose."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from serving.live import services as live
from serving.models import KeepMode, LiveText, ModelVersion, TrafficMinute
from tests.test_versions import predict

pytestmark = pytest.mark.django_db

TEXTS = ["please cancel my plan", "the weather is nice", "cancel it now", "send the invoice"]


def test_with_keeping_off_no_text_is_stored(client, trained, key):
    assert predict(client, trained, key, texts=TEXTS).status_code == 200
    assert not LiveText.objects.exists()


def test_every_text_is_kept_with_its_score_version_and_source(client, trained, key, owner):
    live.set_keeping(trained, mode=KeepMode.ALL, per_day=1000, by=owner)
    body = predict(client, trained, key, texts=TEXTS).json()
    kept = list(LiveText.objects.order_by("pk"))
    assert [k.text for k in kept] == TEXTS
    assert [round(k.score, 6) for k in kept] == [round(r["score"], 6) for r in body["results"]]
    assert [k.matched for k in kept] == [r["match"] for r in body["results"]]
    version = ModelVersion.objects.get(tracker=trained, is_live=True)
    assert {(k.version_id, k.source, k.probability) for k in kept} == {(version.pk, "api", 1.0)}


def test_a_sample_keeps_at_most_n_a_day_each_with_its_chance(client, trained, key, owner):
    live.set_keeping(trained, mode=KeepMode.SAMPLE, per_day=3, by=owner)
    for _ in range(3):
        predict(client, trained, key, texts=TEXTS)
    assert LiveText.objects.count() == 3  # no traffic yesterday: kept until the day's count
    # With 400 texts yesterday, tomorrow each text has a 3/400 chance.
    tomorrow = timezone.localdate() + timedelta(days=1)
    TrafficMinute.objects.create(tracker=trained, start=timezone.now(), span_minutes=60, predictions=400)
    assert live._rate(trained.pk, 3, tomorrow) == pytest.approx(3 / 400)


def test_bulk_scoring_keeps_its_texts_too(owner, trained, embedded, django_capture_on_commit_callbacks):
    from serving.scoring import services as scoring

    live.set_keeping(trained, mode=KeepMode.ALL, per_day=1000, by=owner)
    with django_capture_on_commit_callbacks(execute=True):
        scoring.start_scoring(dataset=embedded, user=owner, trackers=[trained])
    kept = LiveText.objects.filter(tracker=trained)
    assert kept.count() == embedded.segments.count() and set(kept.values_list("source", flat=True)) == {
        "bulk"
    }


def test_expired_texts_are_swept(trained, owner, settings):
    live.set_keeping(trained, mode=KeepMode.ALL, per_day=1000, by=owner)
    version = ModelVersion.objects.get(tracker=trained, is_live=True)
    for days in (1, 29, 31):
        LiveText.objects.create(
            tracker=trained,
            version=version,
            text=f"{days} days",
            text_hash=str(days),
            score=0.5,
            matched=False,
            source="api",
            created_at=timezone.now() - timedelta(days=days),
        )
    assert live.sweep_expired() == 1
    assert sorted(LiveText.objects.values_list("text", flat=True)) == ["1 days", "29 days"]


def test_the_panel_says_what_is_kept_and_only_managers_change_it(client, trained, owner, viewer):
    url = reverse("tracker-live-keeping", args=[trained.code])
    client.force_login(viewer)
    page = client.get(reverse("tracker-live", args=[trained.code]))
    assert page.status_code == 200 and b"keeps none of the texts" in page.content
    assert client.post(url, {"mode": "all", "per_day": "10"}).status_code == 403
    client.force_login(owner)
    assert client.post(url, {"mode": "sample", "per_day": "250"}).status_code == 302
    page = client.get(reverse("tracker-live", args=[trained.code]))
    assert b"a sample of at most 250 a day" in page.content and b"for 30 days" in page.content
    assert client.post(url, {"mode": "everything", "per_day": "10"}).status_code == 422


def test_the_many_trackers_endpoint_keeps_texts_only_for_trackers_that_keep(
    client, two_live, key, owner, workspace
):
    wants, other = two_live
    live.set_keeping(wants, mode=KeepMode.ALL, per_day=1000, by=owner)
    response = client.post(
        f"/api/v1/workspaces/{workspace.code}/predict",
        {"texts": TEXTS},
        content_type="application/json",
        headers=key,
    )
    assert response.status_code == 200
    kept = LiveText.objects.order_by("pk")
    assert [k.text for k in kept] == TEXTS and {k.tracker_id for k in kept} == {wants.pk}
    by_text = {s["text"]: {m["tracker"] for m in s["matches"]} for s in response.json()["segments"]}
    assert [k.matched for k in kept] == [str(wants.code) in by_text[t] for t in TEXTS]
