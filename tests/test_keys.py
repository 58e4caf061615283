"""No key above its maker: a key makes, sees and revokes only what its own rights allow, and acts with
the lesser of its role and its maker's role of now — through the API and on the keys page."""

from __future__ import annotations

import pytest
from django.urls import reverse

from serving.models import ApiKey
from tests import api_world
from trackers.models import Role

pytestmark = pytest.mark.django_db


def bearer(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


def make(client, workspace, headers, **body):
    return client.post(
        f"/api/v1/workspaces/{workspace.code}/keys", body, content_type="application/json", headers=headers
    )


def promote(client, tracker, headers):
    return client.post(f"/api/v1/trackers/{tracker.code}/versions/1/promote", headers=headers)


def test_a_limited_key_makes_only_keys_within_its_trackers_and_sees_and_revokes_only_itself(
    client, two_live, workspace, owner
):
    wants, other = two_live
    adam = api_world.member(workspace, "adam", Role.ADMIN)
    owners_key, owners_raw = ApiKey.issue(
        workspace=workspace, name="owner's", created_by=owner, role=Role.OWNER
    )
    limited, raw = ApiKey.issue(workspace=workspace, name="t1 only", created_by=adam, trackers=[other])
    headers = bearer(raw)
    listed = client.get(f"/api/v1/workspaces/{workspace.code}/keys", headers=headers)
    assert listed.status_code == 200 and [k["id"] for k in listed.json()] == [limited.pk]

    # The issue's finding: an owner key with no tracker limit, minted by a key limited to one tracker.
    refused = make(client, workspace, headers, name="escalate", role="owner")
    assert refused.status_code == 403
    assert refused.json()["detail"] == (
        "role: a key cannot have more rights than its maker: you are admin, the key asks for owner"
    )
    unlimited = make(client, workspace, headers, name="wider", role="admin")
    assert unlimited.status_code == 403 and unlimited.json()["detail"].startswith("trackers: a key limited")
    outside = make(client, workspace, headers, name="other", role="admin", trackers=[str(wants.code)])
    assert outside.status_code == 403 and str(wants.code) in outside.json()["detail"]
    within = make(client, workspace, headers, name="narrow", role="labeler", trackers=[str(other.code)])
    assert within.status_code == 201 and within.json()["trackers"] == [str(other.code)]
    minted = bearer(within.json()["key"])
    assert promote(client, wants, minted).status_code == 404  # a tracker it cannot see
    assert promote(client, other, minted).status_code == 403  # a labeler does not promote

    assert (
        client.post(
            f"/api/v1/workspaces/{workspace.code}/keys/{owners_key.pk}/revoke", headers=headers
        ).status_code
        == 404
    )
    owners_key.refresh_from_db()
    assert owners_key.revoked_at is None and promote(client, wants, bearer(owners_raw)).status_code == 200
    mine = client.post(f"/api/v1/workspaces/{workspace.code}/keys/{limited.pk}/revoke", headers=headers)
    assert mine.status_code == 200 and mine.json()["revoked_at"]  # a key may always revoke itself
    assert client.get(f"/api/v1/workspaces/{workspace.code}/keys", headers=headers).status_code == 401


def test_a_members_keys_have_at_most_their_role_and_revoke_only_keys_not_above_it(
    client, two_live, workspace, owner
):
    wants, _ = two_live
    adam = api_world.member(workspace, "adam", Role.ADMIN)
    _, raw = ApiKey.issue(workspace=workspace, name="adam's", created_by=adam, role=Role.ADMIN)
    headers = bearer(raw)
    assert make(client, workspace, headers, name="x", role="owner").status_code == 403
    assert make(client, workspace, headers, name="x", role="admin").status_code == 201
    owners_key, _ = ApiKey.issue(workspace=workspace, name="owner's", created_by=owner, role=Role.OWNER)
    labelers_key, _ = ApiKey.issue(
        workspace=workspace, name="a labeler's", created_by=owner, role=Role.LABELER
    )
    url = f"/api/v1/workspaces/{workspace.code}/keys"
    above = client.post(f"{url}/{owners_key.pk}/revoke", headers=headers)
    assert (
        above.status_code == 403
        and above.json()["detail"] == "only an owner can revoke a key with the owner role"
    )
    assert client.post(f"{url}/{labelers_key.pk}/revoke", headers=headers).status_code == 200
    _, pred = ApiKey.issue(workspace=workspace, name="p", created_by=adam, predict_only=True)
    made = make(client, workspace, bearer(pred), name="x", role="viewer")
    assert made.status_code == 403 and "may only predict" in made.json()["detail"]  # it makes nothing


def test_a_keys_rights_follow_its_makers_role_of_now(client, two_live, workspace, owner):
    wants, _ = two_live
    adam = api_world.member(workspace, "adam", Role.ADMIN)
    _, raw = ApiKey.issue(workspace=workspace, name="adam's", created_by=adam, role=Role.ADMIN)
    headers = bearer(raw)
    assert promote(client, wants, headers).status_code == 200  # kept by this process from now on
    minted = make(client, workspace, headers, name="made before", role="admin")
    assert minted.status_code == 201
    api_world.demote(workspace, adam, Role.VIEWER)
    # The next request: both keys act as a viewer, the one made before the demotion too.
    for key in (headers, bearer(minted.json()["key"])):
        assert promote(client, wants, key).status_code == 403
        assert make(client, workspace, key, name="x", role="viewer").status_code == 403
        assert client.get(f"/api/v1/workspaces/{workspace.code}/keys", headers=key).status_code == 403
        answer = client.post(
            f"/api/v1/trackers/{wants.code}/predict",
            {"texts": ["x"]},
            content_type="application/json",
            headers=key,
        )
        assert answer.status_code == 200  # what a viewer may do, it still does
    listed = client.get(
        f"/api/v1/workspaces/{workspace.code}/keys",
        headers=bearer(ApiKey.issue(workspace=workspace, name="o", created_by=owner, role=Role.OWNER)[1]),
    ).json()
    assert {k["name"]: (k["role"], k["acts_as"]) for k in listed}["adam's"] == ("admin", "viewer")
    api_world.demote(workspace, adam, Role.ADMIN)
    assert promote(client, wants, headers).status_code == 200


def test_the_keys_page_offers_and_makes_only_roles_up_to_the_members_own(client, two_live, workspace, owner):
    adam = api_world.member(workspace, "adam", Role.ADMIN)
    owners_key, _ = ApiKey.issue(workspace=workspace, name="owner's", created_by=owner, role=Role.OWNER)
    labelers_key, _ = ApiKey.issue(
        workspace=workspace, name="a labeler's", created_by=owner, role=Role.LABELER
    )
    client.force_login(adam)
    url = reverse("api-keys", args=[workspace.code])
    page = client.get(url).content.decode()
    assert 'value="owner"' not in page and 'value="admin"' in page
    revoke_owner = reverse("api-key-revoke", args=[workspace.code, owners_key.pk])
    assert revoke_owner not in page  # no button that leads to a refusal
    assert reverse("api-key-revoke", args=[workspace.code, labelers_key.pk]) in page
    forged = client.post(url, {"name": "escalate", "role": "owner"})
    assert forged.status_code == 400 and not ApiKey.objects.filter(name="escalate").exists()
    assert client.post(revoke_owner).status_code == 403
    owners_key.refresh_from_db()
    assert owners_key.revoked_at is None
    made = client.post(url, {"name": "fine", "role": "admin"})
    assert made.status_code == 200 and ApiKey.objects.get(name="fine").role == Role.ADMIN
