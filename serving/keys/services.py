"""API keys: made, listed and revoked by pages and the API under one rule — no key above its maker.

A caller (a signed-in member, or a key) can make a key whose role is at most its own, limited to a
subset of the trackers it is limited to; a prediction-only key makes nothing. A key limited to
trackers, or to prediction, sees and revokes only itself. A member revokes the keys whose role is
at most theirs. A key never acts above its creator's role of now (``ApiKey.rights``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import OuterRef, QuerySet, Subquery
from django.utils import timezone

from serving.models import ApiKey
from trackers import audit, errors, generation
from trackers.access import Scope
from trackers.models import CAN_IMPORT, AuditAction, Membership, Role, Tracker, Workspace, role_at_most


class KeyRefused(errors.Forbidden, PermissionDenied):
    """A key the caller may not make, see or revoke, and why (403)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field=field)


def _limited(scope: Scope) -> bool:
    return scope.key is not None and (scope.key.predict_only or scope.key.tracker_ids is not None)


def _caller_role(scope: Scope, workspace: Workspace) -> str:
    scope.require(workspace, CAN_IMPORT)
    if scope.key is not None and scope.key.predict_only:
        raise KeyRefused("", "a prediction-only key cannot manage keys")
    return scope.role(workspace) or ""


def roles_to_give(scope: Scope, workspace: Workspace) -> list[tuple[str, str]]:
    """The roles the caller may give a new key (at most its own), highest first."""
    mine = scope.role(workspace)
    return [(value, label) for value, label in Role.choices if mine and role_at_most(value, mine)]


def visible_keys(scope: Scope, workspace: Workspace) -> QuerySet[ApiKey]:
    """The keys the caller may see: every key of the workspace, or only itself for a limited key."""
    _caller_role(scope, workspace)
    makers = Membership.objects.filter(workspace=workspace, user=OuterRef("created_by"))
    keys = ApiKey.objects.filter(workspace=workspace).annotate(maker_role=Subquery(makers.values("role")[:1]))
    if _limited(scope):
        assert scope.key is not None
        keys = keys.filter(pk=scope.key.key_id)
    return keys


def issue_key(
    scope: Scope,
    workspace: Workspace,
    *,
    name: str,
    role: str,
    trackers: Iterable[Tracker] = (),
    predict_only: bool = False,
) -> tuple[ApiKey, str]:
    """A new key acting as the caller's user, with no more rights than the caller; the secret once."""
    mine = _caller_role(scope, workspace)
    if role not in Role.values:
        raise KeyRefused("role", f"one of {', '.join(Role.values)} (got {role!r})")
    if not role_at_most(role, mine):
        raise KeyRefused(
            "role", f"a key cannot have more rights than its maker: you are {mine}, the key asks for {role}"
        )
    chosen = list(trackers)
    if any(t.workspace_id != workspace.pk for t in chosen):
        raise KeyRefused("trackers", "every tracker must be of this workspace")
    limit = scope.tracker_ids
    if limit is not None:
        if not chosen:
            raise KeyRefused(
                "trackers",
                "a key limited to trackers can only make keys limited to some of them; name them",
            )
        outside = [t for t in chosen if t.pk not in limit]
        if outside:
            raise KeyRefused("trackers", f"this key is not allowed tracker {outside[0].code}")
    with transaction.atomic():
        key, raw = ApiKey.issue(
            workspace=workspace,
            name=name,
            created_by=scope.actor,
            role=role,
            trackers=chosen,
            predict_only=predict_only,
        )
        audit.record(
            AuditAction.KEY_CREATED,
            workspace=workspace,
            target=f"{key.name} ({key.prefix}…)",
            code=key.prefix,
            detail={"role": role, "trackers": [str(t.code) for t in chosen], "predict_only": predict_only},
        )
    return key, raw


def may_revoke(scope: Scope, key: ApiKey) -> bool:
    """Whether the caller may revoke ``key``: itself always; others only when it is not limited and
    the key's role is at most its own."""
    if scope.key is not None and scope.key.key_id == key.pk:
        return True
    if _limited(scope):
        return False
    mine = scope.role(key.workspace)
    return mine is not None and role_at_most(key.role, mine)


def revoke_key(scope: Scope, key: ApiKey) -> ApiKey:
    """Revoke ``key``: it stops working at the next request, in every process."""
    _caller_role(scope, key.workspace)
    if not may_revoke(scope, key):
        if _limited(scope):
            raise KeyRefused("", "a key limited to trackers or to prediction can revoke only itself")
        raise KeyRefused("", f"only an owner can revoke a key with the {key.role} role")
    with transaction.atomic():
        if revoke_keys(ApiKey.objects.filter(pk=key.pk)):
            audit.record(
                AuditAction.KEY_REVOKED,
                workspace=key.workspace,
                target=f"{key.name} ({key.prefix}…)",
                code=key.prefix,
            )
    key.refresh_from_db(fields=["revoked_at"])
    return key


def revoke_keys_of_removed_member(
    sender: type, *, workspace: Workspace, user: Any, **kwargs: Any
) -> str | None:
    """A member who leaves a workspace takes their keys there with them: revoked at once."""
    prefixes = list(
        ApiKey.objects.filter(workspace=workspace, created_by=user, revoked_at__isnull=True).values_list(
            "prefix", flat=True
        )
    )
    if not prefixes:
        return None
    revoke_keys(ApiKey.objects.filter(workspace=workspace, created_by=user))
    return f"{len(prefixes)} API key{'s' if len(prefixes) != 1 else ''} revoked ({', '.join(p + '…' for p in prefixes)})"


def revoke_keys(keys: QuerySet[ApiKey]) -> int:
    """Revoke keys (one, or many: the admin's action), seen by every process's next request; a key
    revoked already keeps its time."""
    live = keys.filter(revoked_at__isnull=True)
    workspaces = set(live.values_list("workspace_id", flat=True))
    count = live.update(revoked_at=timezone.now())
    for workspace_id in workspaces:
        generation.bump(workspace_id)
    return count


def revoke_keys_left_without_trackers(sender: type, *, obj: Any, **kwargs: Any) -> None:
    """A key limited to trackers that all go would be limited to none, which reads as "all of the
    workspace": it is revoked instead."""
    if not isinstance(obj, Tracker):
        return
    limited = ApiKey.objects.filter(trackers=obj, revoked_at__isnull=True)
    stranded = [key.pk for key in limited if not key.trackers.exclude(pk=obj.pk).exists()]
    if stranded:
        revoke_keys(ApiKey.objects.filter(pk__in=stranded))


def describe_deletion(sender: type, *, obj: Any, **kwargs: Any) -> list[str]:
    if not isinstance(obj, Tracker):
        return []
    limited = ApiKey.objects.filter(trackers=obj, revoked_at__isnull=True)
    stranded = [key for key in limited if not key.trackers.exclude(pk=obj.pk).exists()]
    if not stranded:
        return []
    return [
        f"{len(stranded)} API key(s) limited to this tracker alone are revoked ({', '.join(k.prefix + '…' for k in stranded)})"
    ]
