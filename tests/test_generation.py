"""The access generation: every change that answering a request depends on moves it, and what the
prediction path keeps per process is dropped when it moves (a revoked key, a promotion, a new
threshold or a member who leaves is seen by the very next request)."""

from __future__ import annotations

import functools

import pytest
from django.test import Client

from serving import hot
from serving.models import ApiKey, ModelVersion
from serving.versions import services
from tests.factories import WorkspaceFactory
from tests.test_game import cancel_tracker
from tests.test_versions import live_threshold, play, predict
from trackers import generation, imports
from trackers import services as corpus_services
from trackers.models import Membership

pytestmark = pytest.mark.django_db


@pytest.fixture
def trained(embedded, workspace, owner, django_capture_on_commit_callbacks):
    tracker = cancel_tracker(workspace, owner, embedded)
    play(tracker, owner, django_capture_on_commit_callbacks)
    return tracker


def moves(change, workspace) -> bool:
    before = generation.current(workspace.pk)
    change()
    return generation.current(workspace.pk) != before


def test_watched_changes_move_their_workspaces_generation(
    trained, workspace, owner, embedded, django_capture_on_commit_callbacks
):
    moves_here = functools.partial(moves, workspace=workspace)
    elsewhere = WorkspaceFactory(name="Elsewhere")
    key, _ = ApiKey.issue(workspace=workspace, name="k", created_by=owner)
    changes = [
        lambda: key.save(),
        lambda: key.trackers.add(trained),
        lambda: services.set_threshold(ModelVersion.objects.get(tracker=trained, is_live=True), owner, 0.9),
        lambda: trained.datasets.remove(embedded),
        lambda: services.promote(ModelVersion.objects.filter(tracker=trained).first(), owner),
    ]
    for change in changes:
        assert not moves(
            lambda change=change: moves_here(change), elsewhere
        )  # another workspace keeps its own
    assert moves_here(lambda: Membership.objects.filter(user=owner).delete())
    assert moves(lambda: owner.save(), elsewhere)  # a user: every workspace
    assert not moves_here(lambda: key.touch())  # a key's last-used time changes nothing it answers
    # a sign-in saves the user's last_login, which no request is answered from
    assert not moves_here(lambda: Client().force_login(owner))

    def more_texts():  # embedded by the encoder the dataset already has: nothing serving reads changes
        with django_capture_on_commit_callbacks(execute=True):
            imports.start_import(dataset=embedded, user=owner, filename="m.csv", data=b"text\nmore\n")

    assert not moves_here(more_texts) and embedded.segments.filter(text="more", vector_row__isnull=False)

    fresh = corpus_services.create_dataset(workspace=workspace, name="Fresh")

    def first_texts():  # a dataset's first vectors: its encoder is set, which serving reads
        with django_capture_on_commit_callbacks(execute=True):
            imports.start_import(dataset=fresh, user=owner, filename="f.csv", data=b"text\nfirst\n")

    assert moves_here(first_texts)


def test_a_snapshot_keeps_lookups_until_its_workspaces_generation_moves():
    built = []
    first = hot.snapshot(None, 1).get("k", lambda: built.append(1) or "a")
    again = hot.snapshot(None, 1).get("k", lambda: built.append(2) or "b")
    assert (first, again, built) == ("a", "a", [1])
    other = hot.snapshot(None, 2).get("k", lambda: built.append(2) or "x")
    generation.bump(2)  # another workspace's change
    assert hot.snapshot(None, 1).get("k", lambda: built.append(3) or "c") == "a"
    assert hot.snapshot(None, 2).get("k", lambda: built.append(4) or "y") == "y" != other
    generation.bump(1)
    assert hot.snapshot(None, 1).get("k", lambda: built.append(5) or "c") == "c"
    generation.bump()  # the global counter: every workspace's lookups go
    assert hot.snapshot(None, 2).get("k", lambda: built.append(6) or "z") == "z"
    assert built == [1, 2, 4, 5, 6]


def test_the_next_request_sees_a_revocation_a_new_threshold_and_a_member_leaving(
    client, trained, workspace, owner
):
    from django.urls import reverse

    key, raw = ApiKey.issue(workspace=workspace, name="k", created_by=owner)
    headers = {"Authorization": f"Bearer {raw}"}
    first = predict(client, trained, headers, texts=["cancel my plan"]).json()
    assert first["threshold_source"] == "training"
    live_threshold(trained, owner, 0.999)
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
