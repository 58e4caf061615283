"""API keys in the prediction API: list, make and revoke a workspace's keys (``serving.keys.services``
says who may)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Field, Router, Schema, Status
from ninja.errors import HttpError
from pydantic import AfterValidator

from serving.keys import services as keys
from serving.models import ApiKey
from trackers.access import Scope
from trackers.models import CAN_IMPORT
from trackers.text import storable

router = Router(tags=["keys"])


class KeyIn(Schema):
    name: Annotated[str, Field(min_length=1, max_length=120), AfterValidator(storable)]
    role: str = Field("labeler", pattern="^(owner|admin|labeler|viewer)$")
    predict_only: bool = False
    trackers: list[UUID] = Field(default_factory=list, max_length=100, description="none: every tracker")


class KeyOut(Schema):
    id: int
    name: str
    prefix: str
    role: str
    acts_as: str = Field(
        alias="rights", description="the role it acts with: the lesser of its own and its maker's of now"
    )
    predict_only: bool
    trackers: list[UUID]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @staticmethod
    def resolve_trackers(key: ApiKey) -> list[UUID]:
        return [t.code for t in key.trackers.all()]


class NewKeyOut(KeyOut):
    key: str = Field(description="the secret, shown this once")


@router.get("/workspaces/{code}/keys", operation_id="list_keys", response=list[KeyOut], tags=["keys"])
def list_keys(request: HttpRequest, code: UUID) -> list[ApiKey]:
    """The workspace's API keys (never their secrets); a key limited to trackers or to prediction
    sees only itself."""
    scope = Scope.of_request(request)
    ws = scope.workspace(code, CAN_IMPORT)
    return list(keys.visible_keys(scope, ws).prefetch_related("trackers"))


@router.post("/workspaces/{code}/keys", operation_id="create_key", response={201: NewKeyOut}, tags=["keys"])
def create_key(request: HttpRequest, code: UUID, body: KeyIn) -> Status[Any]:
    """A new key acting as the caller, optionally limited to some trackers and to prediction; never
    with more rights than the caller (a role at most its own, trackers within its own limits)."""
    scope = Scope.of_request(request)
    ws = scope.workspace(code, CAN_IMPORT)
    trackers = list(ws.trackers.filter(code__in=body.trackers))
    if len(trackers) != len(set(body.trackers)):
        raise HttpError(422, "trackers: every code must be a tracker of this workspace")
    key, raw = keys.issue_key(
        scope, ws, name=body.name, role=body.role, trackers=trackers, predict_only=body.predict_only
    )
    key.key = raw  # type: ignore[attr-defined]  # the response's only copy of the secret
    return Status(201, key)


@router.post(
    "/workspaces/{code}/keys/{key_id}/revoke", operation_id="revoke_key", response=KeyOut, tags=["keys"]
)
def revoke_key(request: HttpRequest, code: UUID, key_id: int) -> ApiKey:
    """Revoke a key: it stops working at once. A key may revoke itself; a member, the keys whose role
    is at most theirs."""
    scope = Scope.of_request(request)
    ws = scope.workspace(code, CAN_IMPORT)
    key = get_object_or_404(keys.visible_keys(scope, ws), pk=key_id)
    return keys.revoke_key(scope, key)
