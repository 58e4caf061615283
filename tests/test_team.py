"""Members and invitations: a one-time link with a role, role changes that apply on the next request
(API keys included), removal, and the last owner kept."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from serving.models import ApiKey
from tests.factories import MembershipFactory, UserFactory
from trackers import errors, members
from trackers.models import Invitation, Membership, Role

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_member(workspace):
    return MembershipFactory(workspace=workspace, user=UserFactory(username="ada"), role=Role.ADMIN).user


def _invite(client, workspace, role="labeler", email=""):
    response = client.post(reverse("member-invite", args=[workspace.code]), {"role": role, "email": email})
    assert response.status_code == 200, response.content[:500]
    link = response.context["new_link"]
    assert link.startswith("http://testserver/invite/")
    return link.removeprefix("http://testserver")


def test_an_owner_invites_by_link_and_a_new_user_joins_with_the_role_and_their_own_password(
    client, workspace, owner
):
    client.force_login(owner)
    path = _invite(client, workspace, role="labeler")
    token = path.split("/")[2]
    invitation = Invitation.objects.get(workspace=workspace)
    assert invitation.token_hash != token and token not in invitation.token_hash  # only the hash is kept
    assert timedelta(days=6, hours=23) < invitation.expires_at - timezone.now() <= timedelta(days=7)
    client.logout()

    page = client.get(path)
    assert page.status_code == 200 and b"labeler" in page.content
    joined = client.post(
        path, {"username": "nora", "password1": "a-long pass 42!", "password2": "a-long pass 42!"}
    )
    assert joined.status_code == 302 and joined["Location"] == reverse("workspace", args=[workspace.code])
    nora = Membership.objects.get(workspace=workspace, user__username="nora")
    assert nora.role == Role.LABELER and nora.user.check_password("a-long pass 42!")
    assert client.get(reverse("workspace", args=[workspace.code])).status_code == 200  # signed in

    client.logout()  # the link worked once
    again = client.get(path)
    assert again.status_code == 410 and b"used already" in again.content
    refused = client.post(
        path, {"username": "mallory", "password1": "x-long pass 42!", "password2": "x-long pass 42!"}
    )
    assert refused.status_code == 410 and not Membership.objects.filter(user__username="mallory").exists()


def test_a_signed_in_user_joins_with_one_click_and_a_weak_password_is_refused_with_why(
    client, workspace, owner, stranger
):
    client.force_login(owner)
    path = _invite(client, workspace, role="viewer")
    client.logout()
    weak = client.post(path, {"username": "pat", "password1": "123", "password2": "123"})
    assert weak.status_code == 422 and b"too short" in weak.content
    assert not Membership.objects.filter(user__username="pat").exists()

    client.force_login(stranger)
    assert client.post(path).status_code == 302
    assert Membership.objects.get(workspace=workspace, user=stranger).role == Role.VIEWER


def test_expired_and_withdrawn_links_say_so(client, workspace, owner):
    client.force_login(owner)
    expired_path = _invite(client, workspace)
    Invitation.objects.filter(workspace=workspace).update(expires_at=timezone.now() - timedelta(minutes=1))
    withdrawn_path = _invite(client, workspace)
    withdrawn = Invitation.objects.filter(workspace=workspace).order_by("-created_at").first()
    assert client.post(reverse("invitation-revoke", args=[workspace.code, withdrawn.pk])).status_code == 302
    client.logout()
    assert b"expired" in client.get(expired_path).content and client.get(expired_path).status_code == 410
    assert b"withdrawn" in client.get(withdrawn_path).content
    assert client.get("/invite/not-a-real-token/").status_code == 404


def test_the_link_is_mailed_when_the_install_can_mail(client, workspace, owner, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    client.force_login(owner)
    from django.test import TestCase

    with TestCase.captureOnCommitCallbacks(execute=True):
        path = _invite(client, workspace, email="new@example.com")
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["new@example.com"]
    assert path in mail.outbox[0].body and workspace.name in mail.outbox[0].subject


def test_who_may_invite_and_what(client, workspace, owner, admin_member, viewer):
    with pytest.raises(members.MemberRefused, match="only an owner can invite another owner"):
        members.invite(workspace, by=admin_member, role="owner")
    members.invite(workspace, by=admin_member, role="admin")  # up to their own
    with pytest.raises(members.MemberRefused, match="owners and admins"):
        members.invite(workspace, by=viewer, role="viewer")
    with pytest.raises(errors.Invalid, match="not a role"):
        members.invite(workspace, by=owner, role="emperor")
    client.force_login(viewer)
    assert client.post(reverse("member-invite", args=[workspace.code]), {"role": "viewer"}).status_code == 403
    page = client.get(reverse("members", args=[workspace.code]))
    assert (
        page.status_code == 200
        and b"olivia" in page.content
        and b"Create invitation link" not in page.content
    )


def test_a_role_change_applies_on_the_next_request_api_keys_included(client, workspace, owner, admin_member):
    key, raw = ApiKey.issue(workspace=workspace, name="ada's", created_by=admin_member, role=Role.ADMIN)
    headers = {"Authorization": f"Bearer {raw}"}
    made = client.post(
        f"/api/workspaces/{workspace.code}/datasets",
        {"name": "A"},
        content_type="application/json",
        headers=headers,
    )
    assert made.status_code == 201
    client.force_login(owner)
    response = client.post(reverse("member-role", args=[workspace.code, admin_member.pk]), {"role": "viewer"})
    assert response.status_code == 302
    assert Membership.objects.get(workspace=workspace, user=admin_member).role == Role.VIEWER
    refused = client.post(
        f"/api/workspaces/{workspace.code}/datasets",
        {"name": "B"},
        content_type="application/json",
        headers=headers,
    )
    assert refused.status_code == 403  # the key acts with its maker's role of now
    client.force_login(admin_member)
    assert client.post(reverse("member-invite", args=[workspace.code]), {"role": "viewer"}).status_code == 403


def test_the_last_owner_is_neither_demoted_nor_removed_and_admins_do_not_touch_owners(
    client, workspace, owner, admin_member
):
    mine = Membership.objects.get(workspace=workspace, user=owner)
    with pytest.raises(errors.Conflict, match="last owner"):
        members.change_role(mine, "admin", by=owner)
    with pytest.raises(errors.Conflict, match="last owner"):
        members.remove_member(mine, by=owner)
    with pytest.raises(members.MemberRefused, match="only an owner"):
        members.change_role(mine, "viewer", by=admin_member)
    with pytest.raises(members.MemberRefused, match="only an owner can make another owner"):
        members.change_role(Membership.objects.get(user=admin_member), "owner", by=admin_member)
    members.change_role(Membership.objects.get(user=admin_member), "owner", by=owner)
    members.change_role(mine, "admin", by=admin_member)  # two owners: one may step down
    assert Membership.objects.get(pk=mine.pk).role == Role.ADMIN
    client.force_login(admin_member)
    page = client.post(reverse("member-remove", args=[workspace.code, admin_member.pk]), follow=True)
    assert b"last owner" in page.content
    assert Membership.objects.filter(workspace=workspace, role=Role.OWNER).count() == 1


def test_removing_a_member_revokes_their_keys_and_shuts_them_out(client, workspace, owner, admin_member):
    key, raw = ApiKey.issue(workspace=workspace, name="ada's", created_by=admin_member, role=Role.ADMIN)
    headers = {"Authorization": f"Bearer {raw}"}
    assert client.get("/api/workspaces", headers=headers).status_code == 200
    client.force_login(owner)
    page = client.post(reverse("member-remove", args=[workspace.code, admin_member.pk]), follow=True)
    assert b"ada was removed; 1 API key revoked" in page.content
    assert not Membership.objects.filter(workspace=workspace, user=admin_member).exists()
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert Client().get("/api/workspaces", headers=headers).status_code == 401
    client.force_login(admin_member)
    assert client.get(reverse("workspace", args=[workspace.code])).status_code == 404


def test_owners_and_admins_change_a_trackers_settings_with_checks(client, trained, workspace, owner, viewer):
    from trackers.models import AuditAction, AuditEntry

    url = reverse("tracker-settings", args=[trained.code])
    client.force_login(viewer)
    assert client.get(url).status_code == 403
    client.force_login(owner)
    page = client.get(url)
    assert (
        page.status_code == 200
        and page.context["form"].initial["target_precision"] == trained.target_precision
    )
    bad = client.post(url, {"name": "x", "target_precision": "1.5", "round_size": "25"})
    assert bad.status_code == 422 and "target_precision" in bad.context["form"].errors
    done = client.post(
        url, {"name": "Churn risk", "description": "wants out", "target_precision": "0.9", "round_size": "30"}
    )
    assert done.status_code == 302
    trained.refresh_from_db()
    assert (trained.name, trained.target_precision, trained.round_size) == ("Churn risk", 0.9, 30)
    entry = AuditEntry.objects.get(action=AuditAction.TRACKER_CHANGED)
    assert set(entry.detail["changed"]) == {"name", "description", "target_precision", "round_size"}
