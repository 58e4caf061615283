"""Who may see and change what: every lookup of a workspace object goes through here."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404

from trackers.models import Dataset, Document, Job, Membership, Workspace


def workspaces_for(user):
    return (
        Workspace.objects.filter(memberships__user=user)
        if user.is_authenticated
        else Workspace.objects.none()
    )


def role_in(user, workspace: Workspace) -> str | None:
    m = Membership.objects.filter(user=user, workspace=workspace).values_list("role", flat=True).first()
    return m


def require_role(user, workspace: Workspace, allowed: set[str]) -> None:
    """403 for a member without the right role (strangers never get this far: they get 404)."""
    if role_in(user, workspace) not in allowed:
        raise PermissionDenied("your role in this workspace does not allow this")


def get_workspace_for_user(user, code) -> Workspace:
    return get_object_or_404(workspaces_for(user), code=code)


def get_dataset_for_user(user, code) -> Dataset:
    return get_object_or_404(
        Dataset.objects.select_related("workspace").filter(workspace__in=workspaces_for(user)), code=code
    )


def get_document_for_user(user, code) -> Document:
    return get_object_or_404(
        Document.objects.select_related("dataset__workspace").filter(
            dataset__workspace__in=workspaces_for(user)
        ),
        code=code,
    )


def get_job_for_user(user, code) -> Job:
    return get_object_or_404(
        Job.objects.select_related("dataset").filter(workspace__in=workspaces_for(user)), code=code
    )


def get_tracker_for_user(user, code):
    from trackers.models import Tracker

    return get_object_or_404(
        Tracker.objects.select_related("workspace").filter(workspace__in=workspaces_for(user)), code=code
    )
