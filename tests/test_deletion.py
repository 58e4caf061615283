"""Deleting a tracker, a dataset or a workspace: its owner is told what goes, types its name, and
everything derived from it goes, files included; a dataset a live model was trained on stays."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from labeling.models import Annotation
from serving.models import ApiKey, ModelVersion
from serving.versions import services as versions
from tests.factories import MembershipFactory, UserFactory
from trackers import deletion, errors, imports
from trackers.models import AuditAction, AuditEntry, Dataset, Role, Segment, Tracker, Workspace

pytestmark = pytest.mark.django_db


def _files(root) -> list[str]:
    base = Path(root)
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()) if base.exists() else []


def _artifacts_but_encoders() -> list[str]:
    return [f for f in _files(settings.ARTIFACT_ROOT) if not f.startswith("encoders/")]


def test_deleting_the_workspace_leaves_no_file_and_no_row(
    client, workspace, owner, trained, embedded, key, django_capture_on_commit_callbacks
):
    version = ModelVersion.objects.get(tracker=trained)
    download = versions.zip_path(version)  # a standalone download, kept under the artifact root
    download.parent.mkdir(parents=True, exist_ok=True)
    download.write_bytes(b"PK")
    # an upload, kept while its import waits (its task is sent on a commit that never comes here)
    imports.start_import(dataset=embedded, user=owner, filename="more.csv", data=b"text\nhello again\n")
    assert _artifacts_but_encoders() and _files(Path(settings.MEDIA_ROOT))
    client.force_login(owner)
    url = reverse("workspace-delete", args=[workspace.code])
    page = client.get(url)
    goes = page.context["goes"]
    assert any("1 dataset" in line for line in goes) and any(
        "model versions (1 live" in line for line in goes
    )
    assert client.post(url, {"confirm_name": "wrong"}).status_code == 422
    with django_capture_on_commit_callbacks(execute=True):
        done = client.post(url, {"confirm_name": workspace.name})
    assert done.status_code == 302 and done["Location"] == reverse("home")
    assert not Workspace.objects.filter(pk=workspace.pk).exists()
    assert not Segment.objects.exists() and not ModelVersion.objects.exists() and not ApiKey.objects.exists()
    assert _artifacts_but_encoders() == [] and _files(Path(settings.MEDIA_ROOT) / "uploads") == []
    entry = AuditEntry.objects.get(action=AuditAction.WORKSPACE_DELETED)
    assert (
        entry.workspace_id == workspace.pk
        and entry.actor_name == "olivia"
        and entry.detail["removed"] == goes
    )
    assert Client().get(reverse("workspace", args=[workspace.code])).status_code == 302


def test_deleting_a_tracker_takes_its_files_and_revokes_keys_limited_to_it_alone(
    client, workspace, owner, trained, django_capture_on_commit_callbacks
):
    from serving.keys import services as keys
    from trackers.access import Scope

    scope = Scope.of_user(owner)
    only, _ = keys.issue_key(scope, workspace, name="only", role="viewer", trackers=[trained])
    code = trained.code
    tracker_files = Path(settings.ARTIFACT_ROOT) / "trackers" / str(code)
    assert _files(tracker_files)
    client.force_login(owner)
    url = reverse("tracker-delete", args=[code])
    page = client.get(url)
    assert any(only.prefix in line for line in page.context["goes"])
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(url, {"confirm_name": trained.name}).status_code == 302
    assert not Tracker.objects.filter(code=code).exists() and not Annotation.objects.exists()
    assert not tracker_files.exists()
    only.refresh_from_db()
    assert only.revoked_at is not None  # it would otherwise see every tracker of the workspace
    assert AuditEntry.objects.filter(action=AuditAction.TRACKER_DELETED, target_code=str(code)).count() == 1


def test_a_dataset_a_live_model_was_trained_on_is_refused_until_its_tracker_goes(
    client, workspace, owner, trained, embedded, django_capture_on_commit_callbacks
):
    client.force_login(owner)
    url = reverse("dataset-delete", args=[embedded.code])
    page = client.get(url)
    assert page.context["refusal"] and trained.name in page.context["refusal"]
    refused = client.post(url, {"confirm_name": embedded.name})
    assert refused.status_code == 409 and Dataset.objects.filter(pk=embedded.pk).exists()
    with django_capture_on_commit_callbacks(execute=True):
        deletion.delete(trained, by=owner, confirm_name=trained.name)
        assert client.post(url, {"confirm_name": embedded.name}).status_code == 302
    assert not Dataset.objects.filter(pk=embedded.pk).exists()
    assert not (Path(settings.ARTIFACT_ROOT) / "datasets" / str(embedded.code)).exists()


def test_only_owners_delete(client, workspace, owner, dataset):
    admin = MembershipFactory(workspace=workspace, user=UserFactory(username="ada"), role=Role.ADMIN).user
    client.force_login(admin)
    assert client.get(reverse("dataset-delete", args=[dataset.code])).status_code == 403
    assert (
        client.post(
            reverse("workspace-delete", args=[workspace.code]), {"confirm_name": workspace.name}
        ).status_code
        == 403
    )
    with pytest.raises(errors.Forbidden):
        deletion.delete(dataset, by=admin, confirm_name=dataset.name)
    assert Workspace.objects.filter(pk=workspace.pk).exists()
