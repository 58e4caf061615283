"""From production back to the game: kept texts join a "live traffic" dataset with their vectors,
drift of live scores against the training pool, review rounds drawn with known chances that count
in the estimates of live traffic, and feedback by an alert's event id or a prediction's id."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pytest
from django.urls import reverse
from django.utils import timezone

from labeling import game, progress
from labeling import services as learning
from labeling.ml import selection
from labeling.models import Annotation, Card
from serving import matches
from serving.live import drift, production
from serving.live import services as live
from serving.models import ApiKey, KeepMode, LiveFeedback, LiveText, TrafficMinute, WebhookEvent
from serving.versions import services as versions
from serving.webhooks import services as webhooks
from tests.factories import MembershipFactory, UserFactory
from tests.test_game import CANCEL, OTHER
from tests.test_versions import predict
from trackers import search
from trackers.models import Dataset, Role, Segment

pytestmark = pytest.mark.django_db

# Texts the corpus does not hold (live traffic), and two it does (answered texts among them).
NEW = [f"{t} please, order {i}" for i in range(4) for t in CANCEL[:4]] + [
    f"{t}, item {i}" for i in range(4) for t in OTHER[:6]
]


def _key(workspace, role: str, name: str) -> dict[str, str]:
    user = MembershipFactory(workspace=workspace, user=UserFactory(username=name), role=role).user
    _, raw = ApiKey.issue(workspace=workspace, name=name, created_by=user, role=role)
    return {"Authorization": f"Bearer {raw}"}


def truth(text: str) -> str:
    return "yes" if "cancel" in text else "no"


# --- the drift statistic ------------------------------------------------------------------


def test_drift_does_not_fire_on_traffic_from_the_training_population_and_fires_on_a_shift():
    rng = np.random.default_rng(0)
    pool = rng.beta(0.5, 3, 3000)  # mostly low scores, as a rare concept's
    same = [drift.compare(pool, rng.beta(0.5, 3, 200)) for _ in range(200)]
    assert sum(d.drifted for d in same) / len(same) <= 0.05
    assert all(d.psi is not None and d.psi < 0.25 for d in same[:20])
    shifted = drift.compare(pool, np.concatenate([rng.beta(0.5, 3, 100), rng.uniform(0.3, 0.6, 100)]))
    assert shifted.drifted and shifted.psi >= drift.PSI_THRESHOLD
    # It says which scores became more common, and how much.
    assert "as common as in training" in shifted.message and "scores between" in shifted.message
    lo, hi = (float(x) for x in shifted.message.split("between ")[1].split(" are")[0].split(" and "))
    assert lo <= 0.45 <= hi and hi - lo < 0.7


def test_drift_waits_for_enough_live_texts_and_shares_follow_the_pool_deciles():
    rng = np.random.default_rng(1)
    pool = rng.uniform(0, 1, 1000)
    few = drift.compare(pool, rng.uniform(0, 1, drift.MIN_TEXTS - 1))
    assert few.psi is None and not few.drifted and few.message == ""
    edges = drift.decile_edges(pool)
    assert len(edges) == 9 and np.allclose(drift.shares(pool, edges), 0.1, atol=0.002)
    # A pool that scores every text the same has one bin: no drift can be told from it, none is said.
    flat = drift.compare(np.zeros(500), np.zeros(150))
    assert flat.psi == pytest.approx(0.0, abs=0.01) and not flat.drifted


# --- review rounds: inclusion probabilities ---------------------------------------------------


def test_a_review_round_draws_each_text_with_the_chance_it_records():
    rng = np.random.default_rng(3)
    scores = rng.beta(0.6, 2, 300)
    exclude = np.arange(0, 300, 7)
    size, runs = 25, 4000
    seen = np.zeros(300)
    first = selection.review_round(scores, 0.5, size=size, rng=np.random.default_rng(0), exclude=exclude)
    chance = {p.index: p.probability for p in first}
    pi = np.zeros(300)
    for k in range(runs):
        picks = selection.review_round(scores, 0.5, size=size, rng=np.random.default_rng(k), exclude=exclude)
        assert len(picks) == size and not set(exclude) & {p.index for p in picks}
        for p in picks:
            seen[p.index] += 1
            pi[p.index] = p.probability
    assert pi.sum() == pytest.approx(size, abs=1e-6)  # the chances of a draw of 25 add up to 25
    assert all(pi[i] == pytest.approx(c) for i, c in chance.items())
    often = pi > 0.05
    assert np.allclose(seen[often] / runs, pi[often], atol=0.035)
    # Matches and non-matches both keep a share: a uniform part over each side of the threshold.
    above, below = scores >= 0.5, scores < 0.5
    assert pi[above & (pi > 0)].min() >= 0.25 * size / above.sum() * 0.99
    assert pi[below & (pi > 0)].min() >= 0.25 * size / below.sum() * 0.99


# --- the live traffic dataset, review rounds in the app, and the estimates -----------------------


def _keep_and_serve(client, tracker, key, owner, texts=NEW):
    live.set_keeping(tracker, mode=KeepMode.ALL, per_day=1000, by=owner)
    assert predict(client, tracker, key, texts=texts).status_code == 200


def test_kept_texts_join_a_live_traffic_dataset_with_their_vectors_and_can_be_searched(
    client, trained, key, owner, django_capture_on_commit_callbacks
):
    from trackers import encoders

    _keep_and_serve(client, trained, key, owner)
    assert LiveText.objects.filter(vector__isnull=False).count() == len(NEW)
    calls = len(encoders.get_encoder(None).calls)
    with django_capture_on_commit_callbacks(execute=True):  # the index build runs on commit
        assert live.gather(trained) == len(NEW)
    assert len(encoders.get_encoder(None).calls) == calls  # nothing embedded again
    dataset = trained.datasets.get(origin=Dataset.LIVE)
    assert dataset.name.startswith("live traffic")
    segments = Segment.objects.filter(dataset=dataset)
    assert sorted(segments.values_list("text", flat=True)) == sorted(NEW)
    assert not LiveText.objects.filter(segment__isnull=True).exists()
    # The stored vectors are the ones the prediction computed.
    vectors = live.vector_store(dataset).get(
        list(segments.order_by("id").values_list("vector_row", flat=True))
    )
    expected = encoders.get_encoder(None).encode(list(segments.order_by("id").values_list("text", flat=True)))
    assert np.allclose(vectors, expected, atol=1e-6)
    dataset.refresh_from_db()
    assert dataset.index_file and dataset.vector_count == len(NEW)
    hits = search.search_segments(dataset, NEW[0], k=3)
    assert hits[0].segment.text == NEW[0]
    # Gathering again adds nothing; the same text served again shares its vector row.
    assert live.gather(trained) == 0
    predict(client, trained, key, texts=[NEW[0]])
    live.gather(trained)
    rows = set(Segment.objects.filter(dataset=dataset, text=NEW[0]).values_list("vector_row", flat=True))
    assert len(rows) == 1


def _answer_round(tracker, user, callbacks) -> list[Card]:
    round_no = game.current_round(tracker)
    answered = []
    while cards := [c for c in game.claim_cards(tracker, user, n=2) if c.round == round_no]:
        for card in cards:
            with callbacks(execute=True):
                learning.answer_card(tracker, user, card, truth(card.segment.text))
            answered.append(card)
    return answered


def test_a_review_round_asks_about_live_texts_and_its_answers_estimate_live_traffic(
    client, trained, key, owner, django_capture_on_commit_callbacks
):
    # Live traffic: new texts, and two texts of the corpus that were answered already.
    answered_text = Annotation.objects.filter(tracker=trained).select_related("segment").first().segment.text
    _keep_and_serve(client, trained, key, owner, texts=[*NEW, answered_text])
    client.force_login(owner)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("tracker-live-review", args=[trained.code]))
    assert response.status_code == 302 and response["Location"] == reverse("play", args=[trained.code])
    round_no = game.current_round(trained)
    cards = list(Card.objects.filter(tracker=trained, round=round_no).select_related("segment__dataset"))
    assert len(cards) == trained.round_size
    assert {c.segment.dataset.origin for c in cards} == {Dataset.LIVE}
    assert answered_text not in {c.segment.text for c in cards}  # a duplicate of an answered text
    assert {c.strategy for c in cards} <= {"uncertain", "positive", "negative"}
    assert all(0 < c.probability <= 1 for c in cards)
    live_entries = Segment.objects.filter(dataset__origin=Dataset.LIVE).exclude(text=answered_text).count()
    assert live_entries == len(NEW)
    # Before: the numbers describe the training pool.
    before = progress.tracker_quality(trained)
    assert before["population"] == "pool"
    # Answering the round trains the next version; its numbers now describe live traffic.
    answered = _answer_round(trained, owner, django_capture_on_commit_callbacks)
    assert len(answered) == trained.round_size
    run = trained.training_runs.filter(state="succeeded").order_by("-created_at").first()
    assert run.metrics["live"]["drawn"] == trained.round_size
    assert run.metrics["live"]["texts"] == len(NEW) + 1
    assert run.metrics["live"]["estimates"]["f1"]["value"] is not None
    quality = progress.quality(run)
    assert quality["population"] == "live" and quality["live_drawn"] == trained.round_size
    page = client.get(reverse("tracker", args=[trained.code])).content.decode()
    assert "These numbers describe <strong>live traffic</strong>" in page and "F1, live traffic" in page
    # The training pool's estimate leaves the live texts out: its unanswered texts are the corpus'.
    pool = learning.evidence_for(run)
    corpus_unanswered = Segment.objects.exclude(dataset__origin=Dataset.LIVE).count() - len(
        {
            a.segment_id
            for a in Annotation.objects.filter(tracker=trained).exclude(segment__dataset__origin=Dataset.LIVE)
        }
    )
    assert len(pool.unanswered_scores) == corpus_unanswered


def test_a_review_is_refused_saying_why_when_nothing_is_kept(client, trained, owner, viewer):
    client.force_login(viewer)
    assert client.post(reverse("tracker-live-review", args=[trained.code])).status_code == 403
    client.force_login(owner)
    response = client.post(reverse("tracker-live-review", args=[trained.code]), follow=True)
    assert "no live text is kept yet" in response.content.decode()


# --- the In production panel -----------------------------------------------------------------


def test_the_panel_shows_traffic_promotions_and_a_drift_warning_that_links_to_a_review(
    client, trained, owner
):
    version = versions.live_version(trained)
    now = timezone.now()
    version.went_live_at = now - timedelta(days=3)
    version.save(update_fields=["went_live_at"])
    for days, predictions, matched in ((5, 100, 10), (1, 200, 60)):
        TrafficMinute.objects.create(
            tracker=trained, start=now - timedelta(days=days), predictions=predictions, matches=matched
        )
    client.force_login(owner)
    page = client.get(reverse("tracker-live", args=[trained.code])).content.decode()
    assert 'id="live-predictions"><strong>300<' in page
    before, after = (
        production.promotions(trained, now)[0]["before"],
        production.promotions(trained, now)[0]["after"],
    )
    assert before["rate"] == pytest.approx(0.1) and after["rate"] == pytest.approx(0.3)
    assert 'id="promotions"' in page and "0.100" in page and "0.300" in page
    assert (
        f"▼v{version.number}" in page and f"version {version.number} went live" in page
    )  # marked on the chart
    assert 'id="drift-wait"' in page  # no kept text yet
    # Kept texts of the live version whose scores sit where the pool's rarely do: drift.
    reference = production.reference_scores(version)
    middle = float(np.quantile(reference, 0.95))
    LiveText.objects.bulk_create(
        LiveText(
            tracker=trained,
            version=version,
            text=f"t{i}",
            text_hash=f"h{i}",
            score=middle,
            matched=False,
            source="api",
        )
        for i in range(150)
    )
    page = client.get(reverse("tracker-live", args=[trained.code])).content.decode()
    assert 'id="drift-warning"' in page and "as common as in training" in page
    assert reverse("tracker-live-review", args=[trained.code]) in page
    assert 'id="live-distribution"' in page and "<rect" in page.split('id="live-distribution"')[1]
    # Kept texts scored like the pool's: no warning.
    LiveText.objects.all().delete()
    rng = np.random.default_rng(0)
    LiveText.objects.bulk_create(
        LiveText(
            tracker=trained,
            version=version,
            text=f"t{i}",
            text_hash=f"h{i}",
            score=float(s),
            matched=False,
            source="api",
        )
        for i, s in enumerate(rng.choice(reference, 300))
    )
    page = client.get(reverse("tracker-live", args=[trained.code])).content.decode()
    assert 'id="drift-ok"' in page and 'id="drift-warning"' not in page


# --- feedback ------------------------------------------------------------------------------


def _alert(client, tracker, key, owner, text=CANCEL[0] + " right now"):
    webhooks.create_endpoint(tracker=tracker, url="https://8.8.8.8/hook", user=owner, from_api=True)
    body = predict(client, tracker, key, texts=[text]).json()
    assert body["results"][0]["match"]
    return WebhookEvent.objects.get(tracker=tracker)


def _feedback(client, path, key, **body):
    return client.post(
        f"/api/v1/{path}/feedback", json.dumps(body), content_type="application/json", headers=key
    )


def test_feedback_by_an_alerts_webhook_id_is_the_callers_answer_and_shows_on_the_page(
    client, trained, key, owner, workspace
):
    event = _alert(client, trained, key, owner)
    labeler = _key(workspace, Role.LABELER, "lena")
    viewer = _key(workspace, Role.VIEWER, "vik")
    assert _feedback(client, f"events/{event.webhook_id}", viewer, verdict="wrong").status_code == 403
    assert _feedback(client, "events/msg_0000", labeler, verdict="wrong").status_code == 404
    assert _feedback(client, f"events/{event.webhook_id}", labeler, verdict="maybe").status_code == 422
    response = _feedback(client, f"events/{event.webhook_id}", labeler, verdict="wrong")
    assert response.status_code == 200, response.content
    text = CANCEL[0] + " right now"
    assert response.json()["answers"] == [{"text": text, "answer": "no"}]
    answer = Annotation.objects.get(tracker=trained, segment__text=text)
    assert (answer.answer, answer.annotator.username, answer.strategy) == ("no", "lena", "feedback")
    assert answer.segment.dataset.origin == Dataset.LIVE  # a text the corpus did not have
    # Saying it again changes the answer, not the count.
    assert (
        _feedback(client, f"events/{event.webhook_id}", labeler, verdict="right").json()["answers"][0][
            "answer"
        ]
        == "yes"
    )
    assert Annotation.objects.filter(tracker=trained, segment__text=text).count() == 1
    assert LiveFeedback.objects.get().verdict == "right"
    _feedback(client, f"events/{event.webhook_id}", labeler, verdict="wrong")
    client.force_login(owner)
    page = client.get(reverse("tracker-live", args=[trained.code])).content.decode()
    assert 'id="wrong-feedback"' in page and text in page and "lena" in page
    # Another workspace's key does not find the event.
    other = MembershipFactory(user=UserFactory(username="sid"), role=Role.OWNER)
    _, raw = ApiKey.issue(workspace=other.workspace, name="x", created_by=other.user)
    stranger = {"Authorization": f"Bearer {raw}"}
    assert _feedback(client, f"events/{event.webhook_id}", stranger, verdict="wrong").status_code == 404


def test_feedback_by_a_predictions_id_with_keeping_off_needs_the_text_back(client, trained, key, workspace):
    labeler = _key(workspace, Role.LABELER, "lena")
    text = "thanks, the export works fine now"
    body = predict(client, trained, key, texts=[text]).json()
    result = body["results"][0]
    assert not LiveText.objects.exists()  # keeping is off: nothing stored
    path = f"predictions/{result['id']}"
    missing = _feedback(client, path, labeler, verdict="wrong")
    assert missing.status_code == 422 and "send it back as `text`" in missing.json()["detail"]
    other = _feedback(client, path, labeler, verdict="wrong", text="another text")
    assert other.status_code == 422 and "not the text the prediction scored" in other.json()["detail"]
    tampered = result["id"].replace(result["id"][1], "9" if result["id"][1] != "9" else "8", 1)
    assert _feedback(client, f"predictions/{tampered}", labeler, verdict="wrong").status_code == 404
    ok = _feedback(client, path, labeler, verdict="wrong", text=text)
    assert ok.status_code == 200, ok.content
    said_yes = "yes" if not result["match"] else "no"  # wrong on a non-match: it is one
    assert ok.json()["answers"] == [{"text": text, "answer": said_yes}]
    assert Annotation.objects.get(tracker=trained, segment__text=text).answer == said_yes


def test_feedback_by_a_predictions_id_finds_a_kept_text_and_ids_come_with_every_result(
    client, trained, key, owner, workspace
):
    live.set_keeping(trained, mode=KeepMode.ALL, per_day=1000, by=owner)
    body = predict(client, trained, key, texts=NEW[:3]).json()
    ids = [r["id"] for r in body["results"]]
    assert len(set(ids)) == 3
    labeler = _key(workspace, Role.LABELER, "lena")
    response = _feedback(client, f"predictions/{ids[0]}", labeler, verdict="right")
    assert response.status_code == 200, response.content
    expected = "yes" if body["results"][0]["match"] else "no"
    assert response.json()["answers"] == [{"text": NEW[0], "answer": expected}]
    segment = Annotation.objects.get(tracker=trained, strategy="feedback").segment
    kept = LiveText.objects.get(text=NEW[0])
    assert kept.segment_id == segment.pk  # the kept text joined the dataset: no second copy
    # The many-trackers endpoint gives each line's match an id too.
    many = client.post(
        f"/api/v1/workspaces/{workspace.code}/predict",
        {"texts": [CANCEL[1]]},
        content_type="application/json",
        headers=key,
    )
    assert many.status_code == 200, many.content
    found = many.json()["segments"][0]["matches"]
    assert found and all(matches.read_prediction_id(m["id"]).matched for m in found)


def test_kept_texts_expire_but_answered_ones_stay_in_the_live_dataset(
    client, trained, key, owner, django_capture_on_commit_callbacks
):
    _keep_and_serve(client, trained, key, owner, texts=NEW[:4])
    live.gather(trained)
    first = Segment.objects.get(dataset__origin=Dataset.LIVE, text=NEW[0])
    game.record_label(trained, owner, segment=first, answer="yes")
    LiveText.objects.update(created_at=timezone.now() - timedelta(days=31))
    assert live.sweep_expired() == 4
    assert list(Segment.objects.filter(dataset__origin=Dataset.LIVE).values_list("text", flat=True)) == [
        NEW[0]
    ]


def test_deleting_a_tracker_deletes_its_live_traffic_dataset(client, trained, key, owner):
    from trackers import deletion

    _keep_and_serve(client, trained, key, owner, texts=NEW[:3])
    live.gather(trained)
    dataset = trained.datasets.get(origin=Dataset.LIVE)
    assert any(dataset.name in line for line in deletion.what_goes(trained))
    deletion.delete(trained, by=owner, confirm_name=trained.name)
    assert not Dataset.objects.filter(pk=dataset.pk).exists()
    assert Dataset.objects.filter(origin="").exists()  # the imported dataset stays


def test_the_periodic_task_gathers_every_keeping_trackers_texts(client, trained, key, owner):
    from serving import tasks

    _keep_and_serve(client, trained, key, owner, texts=NEW[:5])
    assert tasks.gather_live_texts() == 5
    assert tasks.gather_live_texts() == 0
    assert Segment.objects.filter(dataset__origin=Dataset.LIVE).count() == 5
