"""Who may see and change what: every lookup of a workspace object, by a page or the API, goes through here.

A ``Scope`` is what one caller may see (workspaces) and do (a role in each). Pages build it from
the session's user; the API from ``request.auth``, which is either a user (session) or a
``KeyPrincipal`` (an API key: one workspace, one role, acting for the user who made the key).
Strangers get 404 for objects of workspaces they are not in; members whose role is too low, 403.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, TypeVar

from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.shortcuts import get_object_or_404

from trackers.models import Dataset, Document, Job, Membership, Tracker, Workspace

M = TypeVar("M", bound=Model)


@dataclass(frozen=True)
class KeyPrincipal:
    """A caller authenticated by an API key."""

    workspace_id: int
    role: str  # what it may do: the lesser of its own role and its creator's role of now
    user: Any  # the key's creator, whose name answers are recorded under (None if deleted)
    key_id: int
    tracker_ids: frozenset[int] | None = None  # the only trackers it may see; None: all of the workspace
    predict_only: bool = False  # only the prediction API
    prefix: str = ""  # the key's public prefix, as its owners see it listed


class Scope:
    """The workspaces a caller can see and the role it has in each."""

    def __init__(
        self,
        roles: dict[int, str],
        actor: Any,
        tracker_ids: frozenset[int] | None = None,
        key: KeyPrincipal | None = None,
    ) -> None:
        self.roles = roles
        self.actor = actor
        self.tracker_ids = tracker_ids
        self.key = key  # the API key the caller came with, if any

    @classmethod
    def of_user(cls, user) -> Scope:
        if not user.is_authenticated:
            return cls({}, None)
        return cls(dict(Membership.objects.filter(user=user).values_list("workspace_id", "role")), user)

    @classmethod
    def of_request(cls, request) -> Scope:
        """The API caller's scope: an API key's, or the session user's."""
        auth = getattr(request, "auth", None)
        if isinstance(auth, KeyPrincipal):
            return cls({auth.workspace_id: auth.role}, auth.user, auth.tracker_ids, auth)
        return cls.of_user(request.user)

    @property
    def workspaces(self) -> QuerySet[Workspace]:
        return Workspace.objects.filter(pk__in=list(self.roles))

    def role(self, workspace: Workspace) -> str | None:
        return self.roles.get(workspace.pk)

    def require(self, workspace: Workspace, allowed: Collection[str] | None) -> None:
        """403 for a member without the right role (strangers never get this far: they get 404)."""
        if allowed is not None and self.roles.get(workspace.pk) not in allowed:
            raise PermissionDenied("your role in this workspace does not allow this")

    def workspace(self, code, allowed: Collection[str] | None = None) -> Workspace:
        ws = get_object_or_404(self.workspaces, code=code)
        self.require(ws, allowed)
        return ws

    def dataset(self, code, allowed: Collection[str] | None = None) -> Dataset:
        ds = get_object_or_404(
            Dataset.objects.select_related("workspace").filter(workspace_id__in=list(self.roles)), code=code
        )
        self.require(ds.workspace, allowed)
        return ds

    def document(self, code) -> Document:
        return get_object_or_404(
            Document.objects.select_related("dataset__workspace").filter(
                dataset__workspace_id__in=list(self.roles)
            ),
            code=code,
        )

    def job(self, code) -> Job:
        return get_object_or_404(
            Job.objects.select_related("dataset").filter(workspace_id__in=list(self.roles)), code=code
        )

    def find(
        self,
        queryset: QuerySet[M],
        *,
        workspace: str,
        tracker: str | None = None,
        allowed: Collection[str] | None = None,
        **lookup: Any,
    ) -> M:
        """An object of a higher layer (an endpoint, a delivery, a scoring job) by its workspace:
        ``workspace`` is the path from it to its workspace ("endpoint__tracker__workspace"), and
        ``tracker`` its path to a tracker, which a key limited to other trackers may not see. 404 for
        strangers, 403 for a member whose role is not ``allowed``."""
        found = queryset.filter(**{f"{workspace}_id__in": list(self.roles)})
        if tracker is not None and self.tracker_ids is not None:
            found = found.filter(**{f"{tracker}_id__in": self.tracker_ids})
        obj = get_object_or_404(found.select_related(workspace), **lookup)
        owner: Any = functools.reduce(getattr, workspace.split("__"), obj)
        self.require(owner, allowed)
        return obj

    def tracker(self, code, allowed: Collection[str] | None = None) -> Tracker:
        trackers = Tracker.objects.select_related("workspace").filter(workspace_id__in=list(self.roles))
        if self.tracker_ids is not None:  # a key limited to some trackers sees no other
            trackers = trackers.filter(pk__in=self.tracker_ids)
        tracker = get_object_or_404(trackers, code=code)
        self.require(tracker.workspace, allowed)
        return tracker


# Shorthands for pages, which always act as the session's user.


def workspaces_for(user) -> QuerySet[Workspace]:
    return Scope.of_user(user).workspaces


def role_in(user, workspace: Workspace) -> str | None:
    return Membership.objects.filter(user=user, workspace=workspace).values_list("role", flat=True).first()


def require_role(user, workspace: Workspace, allowed: Collection[str]) -> None:
    Scope({workspace.pk: role_in(user, workspace) or ""}, user).require(workspace, allowed)


def get_workspace_for_user(user, code) -> Workspace:
    return Scope.of_user(user).workspace(code)


def get_dataset_for_user(user, code) -> Dataset:
    return Scope.of_user(user).dataset(code)


def get_document_for_user(user, code) -> Document:
    return Scope.of_user(user).document(code)


def get_job_for_user(user, code) -> Job:
    return Scope.of_user(user).job(code)


def get_tracker_for_user(user, code) -> Tracker:
    return Scope.of_user(user).tracker(code)
