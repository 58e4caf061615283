"""The access generation: every change that answering a request depends on moves it, and what the
prediction path keeps per process is dropped when it moves (a revoked key, a promotion, a new
threshold or a member who leaves is seen by the very next request)."""

from __future__ import annotations

import pytest

from serving import hot, services
from serving.models import ApiKey, ModelVersion
from tests.test_game import cancel_tracker
from tests.test_versions import play, predict
from trackers import generation
from trackers.models import Membership

pytestmark = pytest.mark.django_db


@pytest.fixture
def trained(embedded, workspace, owner, django_capture_on_commit_callbacks):
    tracker = cancel_tracker(workspace, owner, embedded)
    play(tracker, owner, django_capture_on_commit_callbacks)
    return tracker


def moves(change) -> bool:
    before = generation.current()
    change()
    return generation.current() > before


def test_watched_changes_move_the_generation(trained, workspace, owner, embedded):
    key, _ = ApiKey.issue(workspace=workspace, name="k", created_by=owner)
    assert moves(lambda: key.save())
    assert moves(lambda: key.trackers.add(trained))
    assert moves(lambda: setattr(trained, "threshold_override", 0.9) or trained.save())
    assert moves(lambda: trained.datasets.remove(embedded))
    assert moves(lambda: owner.save())
    version = ModelVersion.objects.filter(tracker=trained).first()
    assert moves(lambda: services.promote(version, owner))
    assert moves(lambda: Membership.objects.filter(user=owner).delete())
    assert not moves(lambda: key.touch())  # a key's last-used time changes nothing it answers


def test_a_snapshot_keeps_lookups_until_the_generation_moves():
    built = []
    first = hot.snapshot().get("k", lambda: built.append(1) or "a")
    again = hot.snapshot().get("k", lambda: built.append(2) or "b")
    assert (first, again, built) == ("a", "a", [1])
    generation.bump()
    assert hot.snapshot().get("k", lambda: built.append(3) or "c") == "c" and built == [1, 3]


def test_the_next_request_sees_a_revocation_a_new_threshold_and_a_member_leaving(
    client, trained, workspace, owner
):
    from django.test import Client
    from django.urls import reverse

    key, raw = ApiKey.issue(workspace=workspace, name="k", created_by=owner)
    headers = {"Authorization": f"Bearer {raw}"}
    first = predict(client, trained, headers, texts=["cancel my plan"]).json()
    assert first["threshold_source"] == "training"
    trained.threshold_override = 0.999
    trained.save(update_fields=["threshold_override"])
    second = predict(client, trained, headers, texts=["cancel my plan"]).json()
    assert (second["threshold"], second["threshold_source"]) == (0.999, "owner")
    page = Client()  # the owner's browser; ``client`` keeps calling with keys only
    page.force_login(owner)
    assert page.post(reverse("api-key-revoke", args=[workspace.code, key.pk])).status_code == 302
    assert predict(client, trained, headers, texts=["x"]).status_code == 401
    other, raw2 = ApiKey.issue(workspace=workspace, name="k2", created_by=owner)
    headers2 = {"Authorization": f"Bearer {raw2}"}
    assert predict(client, trained, headers2, texts=["x"]).status_code == 200
    Membership.objects.filter(user=owner, workspace=workspace).delete()
    assert predict(client, trained, headers2, texts=["x"]).status_code == 401


def test_a_bad_key_is_401_where_csrf_is_enforced_and_a_session_without_its_token_403(trained, owner):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)  # as a real server sees requests
    url = f"/api/v1/trackers/{trained.code}/predict"
    for headers in ({"Authorization": "Bearer trk_not-a-key"}, {"X-API-Key": "nope"}, {}):
        response = strict.post(url, {"texts": ["x"]}, content_type="application/json", headers=headers)
        assert response.status_code == 401, (headers, response.content)
    strict.force_login(owner)  # a browser session: its POSTs still need the CSRF token
    response = strict.post(url, {"texts": ["x"]}, content_type="application/json")
    assert response.status_code == 403 and b"CSRF" in response.content
