"""The game through the JSON API: create, fetch cards, label (idempotent), undo, train, read metrics."""

from __future__ import annotations

import pytest

from labeling import game
from serving.models import ApiKey
from tests.factories import MembershipFactory, UserFactory
from tests.test_game import cancel_tracker
from trackers.models import Role

pytestmark = pytest.mark.django_db


def test_a_whole_round_through_the_api(client, workspace, embedded, key, django_capture_on_commit_callbacks):
    body = {
        "name": "Wants to cancel",
        "datasets": [str(embedded.code)],
        "round_size": 10,
        "seeds": ["cancel my subscription", "we want to cancel", "end the contract"],
    }
    created = client.post(
        f"/api/workspaces/{workspace.code}/trackers", body, content_type="application/json", headers=key
    )
    assert created.status_code == 201
    tracker = created.json()
    assert (
        tracker["state"] == "labeling"
        and tracker["answers"] == ["yes", "no"]
        and tracker["round"]["size"] == 10
    )
    code = tracker["code"]
    answered = 0
    while cards := [
        c for c in client.post(f"/api/trackers/{code}/cards?n=3", headers=key).json() if c["round"] == 1
    ]:
        for card in cards:
            answer = "yes" if "cancel" in card["text"] else "no"
            # each answer commits: the round's last one queues training, which queues round 2
            with django_capture_on_commit_callbacks(execute=True):
                r = client.post(
                    f"/api/trackers/{code}/labels",
                    {"card": card["id"], "answer": answer},
                    content_type="application/json",
                    headers=key,
                )
            assert r.status_code == 201 and r.json()["created"]
            again = client.post(
                f"/api/trackers/{code}/labels",
                {"card": card["id"], "answer": answer},
                content_type="application/json",
                headers=key,
            )
            assert again.status_code == 200 and not again.json()["created"]
            answered += 1
    assert answered == 10
    status = client.get(f"/api/trackers/{code}", headers=key).json()
    assert status["label_counts"]["answered"] == 10 and status["round"]["round"] == 2
    assert status["quality"]["cv_f1"] is not None and status["last_trained_at"]
    runs = client.get(f"/api/trackers/{code}/runs", headers=key).json()
    assert len(runs) == 1 and runs[0]["state"] == "succeeded" and "pr_curve" in runs[0]["metrics"]
    same = client.post(f"/api/trackers/{code}/train", headers=key)
    assert same.status_code == 200 and same.json()["code"] == runs[0]["code"]  # nothing new to learn
    round_two = client.post(f"/api/trackers/{code}/cards?n=1", headers=key).json()
    assert round_two and 0 < round_two[0]["probability"] <= 1  # how it was drawn
    quality = status["quality"]
    assert quality["check_offered"] == (quality["recall_width"] > 0.2)
    checked = client.post(f"/api/trackers/{code}/check", headers=key)
    assert checked.status_code == 201
    cards = checked.json()
    assert cards and all(c["strategy"] == "check" and c["score"] < quality["threshold"] for c in cards)
    assert all(0 < c["probability"] <= 1 for c in cards)


def test_bad_tracker_definitions_are_refused_with_422(client, workspace, embedded, key):
    url = f"/api/workspaces/{workspace.code}/trackers"
    few = client.post(
        url,
        {"name": "x", "datasets": [str(embedded.code)], "seeds": ["one"]},
        content_type="application/json",
        headers=key,
    )
    assert few.status_code == 422 and few.json()["detail"] == "give at least 3 example sentences (got 1)"
    foreign = client.post(
        url,
        {"name": "x", "datasets": ["00000000-0000-0000-0000-000000000000"], "seeds": ["a", "b", "c"]},
        content_type="application/json",
        headers=key,
    )
    assert foreign.status_code == 422 and "no dataset 00000000" in foreign.json()["detail"]
    assert foreign.json()["field"] == "datasets"


def test_undo_and_bad_answers(client, workspace, embedded, owner, key):
    tracker = cancel_tracker(workspace, owner, embedded, round_size=5, name="t")
    card = client.post(f"/api/trackers/{tracker.code}/cards?n=1", headers=key).json()[0]
    bad = client.post(
        f"/api/trackers/{tracker.code}/labels",
        {"card": card["id"], "answer": "perhaps"},
        content_type="application/json",
        headers=key,
    )
    assert bad.status_code == 422 and "'perhaps' is not an answer" in bad.json()["detail"]
    other = MembershipFactory(workspace=workspace, user=UserFactory(username="lena"), role=Role.LABELER).user
    (held,) = game.claim_cards(tracker, other, n=1)  # a card another labeler is answering
    taken = client.post(
        f"/api/trackers/{tracker.code}/labels",
        {"card": held.pk, "answer": "no"},
        content_type="application/json",
        headers=key,
    )
    assert (
        taken.status_code == 409
        and taken.json()["detail"] == "this card is being answered by another labeler"
    )
    assert client.post(f"/api/trackers/{tracker.code}/undo", headers=key).status_code == 204
    client.post(
        f"/api/trackers/{tracker.code}/labels",
        {"card": card["id"], "answer": "no"},
        content_type="application/json",
        headers=key,
    )
    back = client.post(f"/api/trackers/{tracker.code}/undo", headers=key)
    assert back.status_code == 200 and back.json()["id"] == card["id"]


def test_viewer_keys_read_but_cannot_label(client, workspace, embedded, owner):
    tracker = cancel_tracker(workspace, owner, embedded, round_size=5, name="t")
    _, raw = ApiKey.issue(workspace=workspace, name="ro", role=Role.VIEWER, created_by=owner)
    headers = {"X-API-Key": raw}
    assert client.get(f"/api/trackers/{tracker.code}", headers=headers).status_code == 200
    assert client.post(f"/api/trackers/{tracker.code}/cards", headers=headers).status_code == 403


def test_openapi_documents_the_game(client):
    paths = client.get("/api/openapi.json").json()["paths"]
    for p in (
        "/api/workspaces/{code}/trackers",
        "/api/trackers/{code}/cards",
        "/api/trackers/{code}/labels",
        "/api/trackers/{code}/undo",
        "/api/trackers/{code}/train",
        "/api/trackers/{code}/check",
        "/api/trackers/{code}/runs",
    ):
        assert p in paths
