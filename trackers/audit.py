"""The audit log: who did what, when, through which door, in which request.

Services call ``record`` once per action they carry out (a tracker created, a threshold moved, a key
revoked, a member removed...). Who did it comes from the request being answered
(``trackers.context``): the signed-in user through a page or the API, or an API key and the user who
made it. A worker's task runs with the id of the request that enqueued it and no user: the system
acted ("worker"); outside both, a management command or a shell did ("command"). A service that
knows better passes ``user`` itself.
"""

from __future__ import annotations

from typing import Any

from trackers.access import KeyPrincipal
from trackers.context import current, request_id
from trackers.models import AuditAction, AuditEntry, Workspace


def _who(user: Any) -> tuple[Any, str]:
    """(user, via) of the current caller; ``user`` given: that user, by the current door."""
    caller = current()
    request = caller.request if caller is not None else None
    if request is None:
        return user, "worker" if caller is not None else "command"
    auth = getattr(request, "auth", None)
    if isinstance(auth, KeyPrincipal):
        return user if user is not None else auth.user, f"API key {auth.prefix or auth.key_id}"
    acting_user = user if user is not None else getattr(request, "user", None)
    if acting_user is not None and not acting_user.is_authenticated:
        acting_user = None
    return acting_user, "API" if request.path.startswith("/api/") else "page"


def record(
    action: AuditAction,
    *,
    workspace: Workspace | None,
    target: str = "",
    code: Any = "",
    detail: dict[str, Any] | None = None,
    user: Any = None,
) -> AuditEntry:
    """Write one entry of the audit log: ``action`` on ``target`` (words, and its public ``code``)."""
    who, via = _who(user)
    return AuditEntry.objects.create(
        workspace_id=workspace.pk if workspace is not None else None,
        workspace_name=workspace.name if workspace is not None else "",
        actor_id=who.pk if who is not None else None,
        actor_name=who.get_username() if who is not None else "",
        via=via,
        action=action,
        target=target[:200],
        target_code=str(code or "")[:64],
        detail=detail or {},
        request_id=request_id(),
    )
