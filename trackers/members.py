"""Members of a workspace: invitations by one-time link, role changes, removal.

Owners and admins manage members. An admin cannot hand out, change or take away the owner role; the
last owner can be neither demoted nor removed (two owners demoting each other at once: the rows are
locked, so one of them is refused). A change of role moves the workspace's access generation
(``trackers.generation``), so the next request sees it, API keys included: a key acts with the lesser
of its own role and its maker's role now. ``member_removed`` lets the layers above act on a removal
(serving revokes the removed member's keys).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.mail import send_mail
from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from trackers import audit, errors
from trackers.models import (
    INVITATION_DAYS,
    ROLE_RANK,
    AuditAction,
    Invitation,
    Membership,
    Role,
    Workspace,
)

log = logging.getLogger(__name__)
CAN_MANAGE = {Role.OWNER, Role.ADMIN}

# Sent inside the removal's transaction with (workspace, user, removed_by); receivers return a
# sentence of what else went with the member ("2 API keys revoked"), or None.
member_removed = Signal()


class MemberRefused(errors.Forbidden):
    """The caller may not do this to this member."""


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def role_of(user: User, workspace: Workspace) -> str | None:
    return Membership.objects.filter(workspace=workspace, user=user).values_list("role", flat=True).first()


def _require_manager(workspace: Workspace, by: User) -> str:
    role = role_of(by, workspace)
    if role not in CAN_MANAGE:
        raise MemberRefused("only the workspace's owners and admins manage its members")
    return str(role)


def _check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise errors.Invalid(
            f"'{role}' is not a role; one of {', '.join(r.value for r in Role)}", field="role"
        ) from None


def roles_to_give(workspace: Workspace, by: User) -> list[Role]:
    """The roles ``by`` may give: every role for an owner, up to admin for an admin, none otherwise."""
    role = role_of(by, workspace)
    if role == Role.OWNER:
        return list(Role)
    if role == Role.ADMIN:
        return [r for r in Role if r != Role.OWNER]
    return []


def invite(
    workspace: Workspace,
    *,
    by: User,
    role: str,
    email: str = "",
    link: Callable[[str], str] | None = None,
) -> tuple[Invitation, str]:
    """A one-time invitation link for ``role``, valid ``INVITATION_DAYS`` days. Returns the
    invitation and the link's secret (shown once; only its hash is kept). With ``email`` and a
    configured mail server, the link (``link(secret)``) is mailed too."""
    given = _check_role(role)
    if given not in roles_to_give(workspace, by):
        _require_manager(workspace, by)
        raise MemberRefused("only an owner can invite another owner", field="role")
    email = email.strip()
    raw = secrets.token_urlsafe(24)
    invitation = Invitation.objects.create(
        workspace=workspace,
        role=given,
        email=email,
        token_hash=_hash(raw),
        created_by=by,
        expires_at=timezone.now() + timedelta(days=INVITATION_DAYS),
    )
    audit.record(
        AuditAction.MEMBER_INVITED,
        workspace=workspace,
        target=email or f"a link for a {given.label.lower()}",
        code=invitation.pk,
        detail={"role": given.value, "email": email, "expires_at": invitation.expires_at.isoformat()},
        user=by,
    )
    if email and link is not None and mail_configured():
        url = link(raw)
        transaction.on_commit(lambda: _mail(invitation, by, url))
    return invitation, raw


def mail_configured() -> bool:
    """Whether invitations can be mailed: a mail server is set (``EMAIL_HOST``), or a backend other
    than the default SMTP one (a test's, or a provider's)."""
    backend = settings.EMAIL_BACKEND
    return bool(getattr(settings, "EMAIL_HOST_CONFIGURED", False)) or not backend.endswith(
        "smtp.EmailBackend"
    )


def _mail(invitation: Invitation, by: User, link: str) -> None:
    try:
        send_mail(
            f"Join {invitation.workspace.name} on Trackers",
            f"{by.get_username()} invites you to the workspace {invitation.workspace.name} as "
            f"{invitation.get_role_display().lower()}.\n\nOpen this link to join (it works once, until "
            f"{invitation.expires_at:%Y-%m-%d %H:%M} UTC):\n{link}\n",
            None,
            [invitation.email],
        )
    except Exception as exc:  # the link is still shown to the inviter, who can pass it on
        log.warning("invitation %s not mailed to %s: %s", invitation.pk, invitation.email, exc)


def find_invitation(raw: str) -> Invitation | None:
    """The invitation a link's secret belongs to, in whatever state it is."""
    if not raw or len(raw) > 100:
        return None
    return Invitation.objects.select_related("workspace", "created_by").filter(token_hash=_hash(raw)).first()


def _refusal(invitation: Invitation) -> str | None:
    state = invitation.state
    if state == "accepted":
        return "this invitation has been used already; ask for a new one"
    if state == "revoked":
        return "this invitation was withdrawn; ask for a new one"
    if state == "expired":
        return f"this invitation expired on {invitation.expires_at:%Y-%m-%d}; ask for a new one"
    return None


def why_not_open(invitation: Invitation) -> str | None:
    """Why the link no longer works, in words; None while it does."""
    return _refusal(invitation)


def accept_invitation(raw: str, user: User) -> Membership:
    """Make ``user`` a member with the invitation's role; the link works once."""
    with transaction.atomic():
        invitation = (
            Invitation.objects.select_for_update()
            .select_related("workspace")
            .filter(token_hash=_hash(raw))
            .first()
        )
        if invitation is None:
            raise errors.NotFound("no invitation has this link")
        refusal = _refusal(invitation)
        if refusal:
            raise errors.Conflict(refusal)
        if Membership.objects.filter(workspace=invitation.workspace, user=user).exists():
            raise errors.Conflict(f"you are already a member of {invitation.workspace.name}")
        now = timezone.now()
        Invitation.objects.filter(pk=invitation.pk).update(accepted_at=now, accepted_by=user)
        membership = Membership.objects.create(
            workspace=invitation.workspace, user=user, role=invitation.role
        )
        audit.record(
            AuditAction.MEMBER_JOINED,
            workspace=invitation.workspace,
            target=user.get_username(),
            code=user.pk,
            detail={"role": invitation.role, "invitation": invitation.pk},
            user=user,
        )
    return membership


def sign_up_and_accept(raw: str, *, username: str, password: str) -> Membership:
    """A new user, with the password they chose, joins through the invitation."""
    with transaction.atomic():
        invitation = find_invitation(raw)
        if invitation is None:
            raise errors.NotFound("no invitation has this link")
        refusal = _refusal(invitation)
        if refusal:
            raise errors.Conflict(refusal)
        users = get_user_model()
        if users.objects.filter(username__iexact=username).exists():
            raise errors.Conflict(f"the user name '{username}' is taken; choose another", field="username")
        user = users.objects.create_user(username=username, password=password, email=invitation.email)
        return accept_invitation(raw, user)


def revoke_invitation(invitation: Invitation, *, by: User) -> None:
    """Withdraw an open invitation: its link stops working."""
    _require_manager(invitation.workspace, by)
    if not Invitation.objects.filter(pk=invitation.pk, accepted_at=None, revoked_at=None).update(
        revoked_at=timezone.now()
    ):
        raise errors.Conflict("this invitation is not open any more")
    audit.record(
        AuditAction.INVITATION_REVOKED,
        workspace=invitation.workspace,
        target=invitation.email or f"a link for a {invitation.get_role_display().lower()}",
        code=invitation.pk,
        user=by,
    )


def _locked_owners(workspace: Workspace) -> int:
    return len(list(Membership.objects.select_for_update().filter(workspace=workspace, role=Role.OWNER)))


def _check_may_touch(workspace: Workspace, by: User, membership: Membership) -> str:
    by_role = _require_manager(workspace, by)
    if membership.role == Role.OWNER and by_role != Role.OWNER:
        raise MemberRefused("only an owner can change or remove another owner")
    return by_role


def change_role(membership: Membership, role: str, *, by: User) -> Membership:
    """Give a member another role; the next request, and their keys, act with it."""
    given = _check_role(role)
    workspace = membership.workspace
    with transaction.atomic():
        membership = Membership.objects.select_for_update().get(pk=membership.pk)
        by_role = _check_may_touch(workspace, by, membership)
        if given == Role.OWNER and by_role != Role.OWNER:
            raise MemberRefused("only an owner can make another owner", field="role")
        if membership.role == given:
            return membership
        if membership.role == Role.OWNER and _locked_owners(workspace) <= 1:
            raise errors.Conflict(
                f"{membership.user.get_username()} is the last owner of {workspace.name}: make someone "
                "else an owner first",
                field="role",
            )
        before = membership.role
        membership.role = given
        membership.save(update_fields=["role"])
        audit.record(
            AuditAction.MEMBER_ROLE_CHANGED,
            workspace=workspace,
            target=membership.user.get_username(),
            code=membership.user_id,
            detail={"from": before, "to": given.value},
            user=by,
        )
    return membership


def remove_member(membership: Membership, *, by: User) -> list[str]:
    """Take a member out of the workspace; returns what else went with them, in words."""
    workspace = membership.workspace
    with transaction.atomic():
        membership = Membership.objects.select_for_update().select_related("user").get(pk=membership.pk)
        _check_may_touch(workspace, by, membership)
        if membership.role == Role.OWNER and _locked_owners(workspace) <= 1:
            raise errors.Conflict(
                f"{membership.user.get_username()} is the last owner of {workspace.name}: make someone "
                "else an owner first"
            )
        user = membership.user
        membership.delete()
        also = [
            str(said)
            for _, said in member_removed.send(
                sender=Membership, workspace=workspace, user=user, removed_by=by
            )
            if said
        ]
        audit.record(
            AuditAction.MEMBER_REMOVED,
            workspace=workspace,
            target=user.get_username(),
            code=user.pk,
            detail={"role": membership.role, "also": also},
            user=by,
        )
    return also


def members_of(workspace: Workspace) -> list[dict[str, Any]]:
    """The members, highest role first, then by name."""
    rows = list(workspace.memberships.select_related("user"))
    rows.sort(key=lambda m: (-ROLE_RANK[Role(m.role)], m.user.get_username().lower()))
    owners = sum(1 for m in rows if m.role == Role.OWNER)
    return [
        {
            "membership": m,
            "user": m.user,
            "role": Role(m.role),
            "last_owner": m.role == Role.OWNER and owners == 1,
        }
        for m in rows
    ]


def open_invitations(workspace: Workspace) -> list[Invitation]:
    now = timezone.now()
    return list(
        workspace.invitations.filter(accepted_at=None, revoked_at=None, expires_at__gt=now).select_related(
            "created_by"
        )
    )
