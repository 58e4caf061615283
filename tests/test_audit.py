"""The audit log: every recorded action writes exactly one entry, entries are never edited, owners
filter and export them; each request has an id that its tasks, log lines and entries carry."""

from __future__ import annotations

import csv
import io
import json
import logging
from datetime import timedelta

import pytest
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from serving.keys import services as keys
from serving.models import ModelVersion
from serving.versions import services as versions
from serving.webhooks import services as webhooks
from tests.factories import MembershipFactory, UserFactory
from tests.test_game import cancel_tracker
from tests.test_versions import live_threshold, play
from trackers import definitions, deletion, imports, members, services
from trackers.access import Scope
from trackers.models import AuditAction, AuditEntry, Membership, Role

pytestmark = pytest.mark.django_db


def _one(action: AuditAction, do) -> AuditEntry:
    """Run ``do`` and return the one entry of ``action`` it wrote (and no other entry of any kind)."""
    before = set(AuditEntry.objects.values_list("pk", flat=True))
    do()
    new = list(AuditEntry.objects.exclude(pk__in=before))
    assert [e.action for e in new] == [action], [(e.action, e.target) for e in new]
    return new[0]


def test_every_action_writes_exactly_one_entry(
    trained,
    workspace,
    owner,
    dataset,
    django_capture_on_commit_callbacks,
):
    scope = Scope.of_user(owner)
    colleague = UserFactory(username="carl")
    entry = _one(
        AuditAction.DATASET_CREATED, lambda: services.create_dataset(workspace=workspace, name="Emails")
    )
    assert entry.target == "Emails" and entry.workspace_name == workspace.name
    _one(
        AuditAction.DATASET_IMPORTED,
        lambda: imports.start_import(
            dataset=dataset, user=owner, filename="a.csv", data=b"text\nhello there\n"
        ),
    )
    play(trained, owner, django_capture_on_commit_callbacks)  # a second version
    v1, v2 = ModelVersion.objects.filter(tracker=trained).order_by("number")
    versions.promote(v2, owner)
    moved = _one(AuditAction.THRESHOLD_MOVED, lambda: live_threshold(trained, owner, 0.7))
    assert moved.detail["to"] == 0.7 and moved.actor_name == "olivia"
    back = _one(AuditAction.VERSION_ROLLED_BACK, lambda: versions.promote(v1, owner))
    assert back.detail == {"version": 1, "replaced": 2, "automatic": False}
    _one(AuditAction.VERSION_PROMOTED, lambda: versions.promote(v2, owner))
    made: list = []
    key_entry = _one(
        AuditAction.KEY_CREATED,
        lambda: made.append(keys.issue_key(scope, workspace, name="ci", role="labeler")),
    )
    assert key_entry.target_code == made[0][0].prefix and key_entry.detail["role"] == "labeler"
    _one(AuditAction.KEY_REVOKED, lambda: keys.revoke_key(scope, made[0][0]))
    endpoint_made: list = []
    _one(
        AuditAction.ENDPOINT_CREATED,
        lambda: endpoint_made.append(
            webhooks.create_endpoint(tracker=trained, url="https://8.8.8.8/h", user=owner)
        ),
    )
    endpoint = endpoint_made[0][0]
    changed = _one(
        AuditAction.ENDPOINT_CHANGED, lambda: webhooks.update_endpoint(endpoint, description="CRM")
    )
    assert changed.detail == {"changed": {"description": ["", "CRM"]}}
    _one(AuditAction.SECRET_ROTATED, lambda: webhooks.rotate_secret(endpoint))
    _one(AuditAction.ENDPOINT_DELETED, lambda: webhooks.delete_endpoint(endpoint))
    invited: list = []
    _one(
        AuditAction.MEMBER_INVITED,
        lambda: invited.append(members.invite(workspace, by=owner, role="labeler")),
    )
    _one(AuditAction.INVITATION_REVOKED, lambda: members.revoke_invitation(invited[0][0], by=owner))
    _, raw = members.invite(workspace, by=owner, role="labeler")
    joined = _one(AuditAction.MEMBER_JOINED, lambda: members.accept_invitation(raw, colleague))
    assert joined.actor_name == "carl" and joined.detail["role"] == "labeler"
    membership = Membership.objects.get(workspace=workspace, user=colleague)
    role = _one(AuditAction.MEMBER_ROLE_CHANGED, lambda: members.change_role(membership, "admin", by=owner))
    assert role.detail == {"from": "labeler", "to": "admin"}
    _one(AuditAction.MEMBER_REMOVED, lambda: members.remove_member(membership, by=owner))
    created = _one(
        AuditAction.TRACKER_CREATED, lambda: cancel_tracker(workspace, owner, dataset, name="Second")
    )
    assert created.actor_name == "olivia" and created.target == "Second"
    renamed = _one(
        AuditAction.TRACKER_CHANGED, lambda: definitions.change_tracker(trained, by=owner, name="Churn risk")
    )
    assert renamed.detail == {"changed": {"name": ["Wants to cancel", "Churn risk"]}}
    _one(AuditAction.TRACKER_DELETED, lambda: deletion.delete(trained, by=owner, confirm_name="Churn risk"))
    _one(AuditAction.DATASET_DELETED, lambda: deletion.delete(dataset, by=owner, confirm_name=dataset.name))


def test_entries_are_never_edited_by_the_app_or_the_database(workspace, owner):
    entry = AuditEntry.objects.create(workspace_id=workspace.pk, action=AuditAction.KEY_CREATED, target="k")
    with pytest.raises(TypeError, match="never edited"):
        entry.save()
    with pytest.raises(TypeError, match="never edited"):
        AuditEntry.objects.filter(pk=entry.pk).update(target="forged")
    with pytest.raises(TypeError, match="never deleted"):
        AuditEntry.objects.all().delete()
    with pytest.raises(TypeError, match="never deleted"):
        entry.delete()
    with (
        pytest.raises(DatabaseError, match="never edited"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("UPDATE trackers_auditentry SET target = 'forged' WHERE id = %s", [entry.pk])
    assert AuditEntry.objects.get(pk=entry.pk).target == "k"


def test_who_and_how_are_recorded_from_the_request(client, workspace, owner, key):
    client.force_login(owner)
    client.post(reverse("dataset-create", args=[workspace.code]), {"name": "By page"})
    page = AuditEntry.objects.get(target="By page")
    assert (page.actor_name, page.via) == ("olivia", "page") and len(page.request_id) == 32
    response = Client().post(
        f"/api/workspaces/{workspace.code}/datasets",
        {"name": "By key"},
        content_type="application/json",
        headers={**key, "X-Request-ID": "trace-42"},
    )
    assert response.status_code == 201 and response["X-Request-ID"] == "trace-42"
    by_key = AuditEntry.objects.get(target="By key")
    assert (
        by_key.actor_name == "olivia"
        and by_key.via.startswith("API key trk_")
        and by_key.request_id == "trace-42"
    )


@pytest.fixture
def history(workspace, owner):
    """Entries by two people, of two kinds, on two days."""
    other = MembershipFactory(workspace=workspace, user=UserFactory(username="ben"), role=Role.ADMIN).user
    services.create_dataset(workspace=workspace, name="=cmd|' /C calc'!A0")  # a formula, for the CSV
    old = AuditEntry.objects.get()
    AuditEntry.objects.create(
        workspace_id=workspace.pk,
        actor_id=other.pk,
        actor_name="ben",
        via="page",
        action=AuditAction.KEY_REVOKED,
        target="old key",
        created_at=timezone.now() - timedelta(days=3),
    )
    AuditEntry.objects.create(
        workspace_id=workspace.pk + 1000, action=AuditAction.KEY_REVOKED, target="elsewhere"
    )
    return old, other


def test_owners_filter_the_log_by_person_kind_and_time_and_export_csv(client, workspace, owner, history):
    _, ben = history
    client.force_login(owner)
    url = reverse("audit", args=[workspace.code])
    everything = client.get(url)
    assert (
        everything.status_code == 200 and len(everything.context["page"].object_list) == 2
    )  # not elsewhere's
    assert [e.target for e in client.get(url, {"person": ben.pk}).context["page"].object_list] == ["old key"]
    assert [e.action for e in client.get(url, {"kind": "dataset.created"}).context["page"].object_list] == [
        "dataset.created"
    ]
    since = (timezone.now() - timedelta(days=1)).date().isoformat()
    assert [e.target for e in client.get(url, {"since": since}).context["page"].object_list] == [
        "=cmd|' /C calc'!A0"
    ]
    until = (timezone.now() - timedelta(days=2)).date().isoformat()
    assert [e.target for e in client.get(url, {"until": until}).context["page"].object_list] == ["old key"]
    exported = client.get(url, {"format": "csv", "kind": "dataset.created"})
    assert exported["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(exported.streaming_content).decode())))
    assert rows[0][:5] == ["time", "person", "via", "action", "target"] and len(rows) == 2
    assert rows[1][1] == "system" and rows[1][4] == "'=cmd|' /C calc'!A0"  # never a formula


def test_only_owners_read_the_log(client, workspace, viewer, history):
    _, ben = history  # an admin
    for user in (viewer, ben):
        client.force_login(user)
        assert client.get(reverse("audit", args=[workspace.code])).status_code == 403


def test_each_request_has_an_id_in_its_answer_its_log_line_and_its_tasks(client, owner, workspace, caplog):
    client.force_login(owner)
    with caplog.at_level(logging.INFO, logger="trackers.requests"):
        response = client.get(
            reverse("workspace", args=[workspace.code]), headers={"X-Request-ID": "bad id!"}
        )
    rid = response["X-Request-ID"]
    assert rid != "bad id!" and len(rid) == 32
    lines = [r for r in caplog.records if r.name == "trackers.requests"]
    assert len(lines) == 1
    line = lines[0]
    assert (line.request_id, line.status, line.route, line.user) == (rid, 200, "w/<uuid:code>/", "olivia")
    from pythonjsonlogger.json import JsonFormatter

    as_json = json.loads(JsonFormatter("%(message)s").format(line))
    assert as_json["request_id"] == rid and as_json["ms"] >= 0


def test_a_task_runs_with_the_id_of_the_request_that_queued_it(django_capture_on_commit_callbacks):
    from celery import shared_task

    from trackers import context, work

    seen: list[str] = []

    @shared_task(name="tests.test_audit.remember_request_id")
    def remember(**kwargs):
        seen.append(context.request_id())

    with django_capture_on_commit_callbacks(execute=True):  # sent after the request's context ended
        with context.acting(context.Caller("req-7")):
            work.send_on_commit("tests.test_audit.remember_request_id")
    assert context.current() is None
    assert seen == ["req-7"]
