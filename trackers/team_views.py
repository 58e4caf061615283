"""Pages for running a workspace as a team: members and invitations, and the audit log."""

from __future__ import annotations

import csv
import json
from datetime import datetime, time, timedelta

from django import forms
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from trackers import errors, members
from trackers.access import get_workspace_for_user, require_role, role_in
from trackers.http import PageRequest, form_id
from trackers.models import AuditAction, AuditEntry, Invitation, Membership, Role, Workspace

AUDIT_PAGE = 50


class InviteForm(forms.Form):
    role = forms.ChoiceField(choices=[])
    email = forms.EmailField(
        required=False,
        help_text="Optional. Mailed when the install has a mail server; the link is shown either way.",
    )

    def __init__(self, *args, roles: list[Role], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = [(r.value, r.label) for r in roles]  # type: ignore[attr-defined]
        self.fields["role"].initial = Role.LABELER


def _members_page(
    request: PageRequest, ws: Workspace, *, form: InviteForm | None = None, link: str = "", status: int = 200
) -> HttpResponse:
    role = role_in(request.user, ws)
    manages = role in members.CAN_MANAGE
    roles = members.roles_to_give(ws, request.user)
    return TemplateResponse(
        request,
        "trackers/members.html",
        {
            "workspace": ws,
            "role": role,
            "manages": manages,
            "is_owner": role == Role.OWNER,
            "members": members.members_of(ws),
            "invitations": members.open_invitations(ws) if manages else [],
            "roles": roles,
            "form": form or InviteForm(roles=roles),
            "new_link": link,
            "mailed": manages and members.mail_configured(),
        },
        status=status,
    )


@login_required
def members_page(request: PageRequest, code) -> HttpResponse:
    """Who is in the workspace, with what role; owners and admins invite, change and remove."""
    return _members_page(request, get_workspace_for_user(request.user, code))


@login_required
@require_POST
def invite(request: PageRequest, code) -> HttpResponse:
    """A one-time invitation link (shown once), mailed too when there is a mail server."""
    ws = get_workspace_for_user(request.user, code)
    require_role(request.user, ws, members.CAN_MANAGE)
    form = InviteForm(request.POST, roles=members.roles_to_give(ws, request.user))
    if not form.is_valid():
        return _members_page(request, ws, form=form, status=422)
    template = request.build_absolute_uri(reverse("invitation", args=["TOKEN"]))

    def link(raw: str) -> str:
        return template.replace("TOKEN", raw)

    try:
        _, raw = members.invite(
            ws,
            by=request.user,
            role=form.cleaned_data["role"],
            email=form.cleaned_data["email"],
            link=link,
        )
    except errors.Refused as exc:
        form.add_error(exc.field or None, exc.message)
        return _members_page(request, ws, form=form, status=exc.status)
    return _members_page(request, ws, link=link(raw))


def _membership(ws: Workspace, user_id: int) -> Membership:
    return get_object_or_404(
        Membership.objects.select_related("user", "workspace"), workspace=ws, user_id=user_id
    )


@login_required
@require_POST
def change_member_role(request: PageRequest, code, user_id: int) -> HttpResponse:
    """Give a member another role; the next request, and their keys, act with it."""
    ws = get_workspace_for_user(request.user, code)
    require_role(request.user, ws, members.CAN_MANAGE)
    membership = _membership(ws, user_id)
    try:
        members.change_role(membership, request.POST.get("role", ""), by=request.user)
    except errors.Refused as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{membership.user.get_username()} is now {request.POST.get('role')}.")
    return redirect("members", code=ws.code)


@login_required
@require_POST
def remove_member(request: PageRequest, code, user_id: int) -> HttpResponse:
    """Take a member out of the workspace (their API keys there are revoked with them)."""
    ws = get_workspace_for_user(request.user, code)
    require_role(request.user, ws, members.CAN_MANAGE)
    membership = _membership(ws, user_id)
    name = membership.user.get_username()
    try:
        also = members.remove_member(membership, by=request.user)
    except errors.Refused as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{name} was removed{'; ' + '; '.join(also) if also else ''}.")
    if membership.user_id == request.user.pk:
        return redirect("home")
    return redirect("members", code=ws.code)


@login_required
@require_POST
def revoke_invitation(request: PageRequest, code, invitation_id: int) -> HttpResponse:
    """Withdraw an open invitation."""
    ws = get_workspace_for_user(request.user, code)
    require_role(request.user, ws, members.CAN_MANAGE)
    invitation = get_object_or_404(Invitation, workspace=ws, pk=invitation_id)
    try:
        members.revoke_invitation(invitation, by=request.user)
    except errors.Refused as exc:
        messages.error(request, exc.message)
    return redirect("members", code=ws.code)


def invitation(request: HttpRequest, token: str) -> HttpResponse:
    """The page an invitation link opens: join as the signed-in user, or choose a user name and a
    password and join as a new user."""
    found = members.find_invitation(token)
    if found is None:
        raise Http404("no invitation has this link")
    refusal = members.why_not_open(found)
    signup: UserCreationForm = UserCreationForm()
    status = 200
    if request.method == "POST" and refusal is None:
        try:
            if request.user.is_authenticated:
                members.accept_invitation(token, request.user)
            else:
                signup = UserCreationForm(request.POST)
                if not signup.is_valid():
                    raise errors.Invalid("see the form")
                membership = members.sign_up_and_accept(
                    token,
                    username=signup.cleaned_data["username"],
                    password=signup.cleaned_data["password1"],
                )
                login(request, membership.user, backend="django.contrib.auth.backends.ModelBackend")
        except errors.Refused as exc:
            if exc.field and exc.field in signup.fields:
                signup.add_error(exc.field, exc.message)
            elif exc.message != "see the form":
                refusal = exc.message
            status = exc.status
        else:
            messages.success(request, f"Welcome to {found.workspace.name}.")
            return redirect("workspace", code=found.workspace.code)
    return TemplateResponse(
        request,
        "registration/invitation.html",
        {
            "invitation": found,
            "refusal": refusal,
            "signup": signup,
            "member": request.user.is_authenticated
            and Membership.objects.filter(workspace=found.workspace, user=request.user).exists(),
        },
        status=status if refusal is None or status != 200 else 410,
    )


class AuditFilter(forms.Form):
    person = forms.TypedChoiceField(choices=[], required=False, coerce=int, empty_value=None)
    kind = forms.ChoiceField(choices=[("", "every kind"), *AuditAction.choices], required=False)
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, people: list[tuple[int, str]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["person"].choices = [("", "everyone"), *people]  # type: ignore[attr-defined]


def _day(value, end: bool = False) -> datetime:
    moment = datetime.combine(value, time.min)
    if end:
        moment += timedelta(days=1)
    return timezone.make_aware(moment, timezone.get_current_timezone())


def audit_entries(ws: Workspace, data: dict) -> tuple[AuditFilter, QuerySet[AuditEntry]]:
    """The workspace's audit entries as filtered by ``data`` (person, kind, since, until)."""
    entries = AuditEntry.objects.filter(workspace_id=ws.pk)
    people = sorted(
        {
            (int(pk), name)
            for pk, name in entries.exclude(actor_id=None).values_list("actor_id", "actor_name").distinct()
            if pk is not None
        },
        key=lambda p: p[1].lower(),
    )
    form = AuditFilter(data or None, people=people)
    if form.is_valid():
        f = form.cleaned_data
        if f["person"] is not None:
            entries = entries.filter(actor_id=f["person"])
        if f["kind"]:
            entries = entries.filter(action=f["kind"])
        if f["since"]:
            entries = entries.filter(created_at__gte=_day(f["since"]))
        if f["until"]:
            entries = entries.filter(created_at__lt=_day(f["until"], end=True))
    return form, entries


class _Echo:
    def write(self, value: str) -> str:
        return value


@login_required
def audit_page(request: PageRequest, code) -> HttpResponse | StreamingHttpResponse:
    """Who did what and when in the workspace, for its owners; filtered, paged, or as CSV."""
    ws = get_workspace_for_user(request.user, code)
    require_role(request.user, ws, {Role.OWNER})
    form, entries = audit_entries(ws, request.GET.dict())
    if request.GET.get("format") == "csv":
        writer = csv.writer(_Echo())
        header = ["time", "person", "via", "action", "target", "target_code", "detail", "request_id"]

        def rows():
            yield writer.writerow(header)
            for e in entries.iterator(chunk_size=500):
                yield writer.writerow(
                    [
                        e.created_at.isoformat(),
                        e.actor_name or "system",
                        e.via,
                        e.action,
                        _csv_safe(e.target),
                        e.target_code,
                        _csv_safe(_detail_text(e.detail)),
                        e.request_id,
                    ]
                )

        response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="audit-{ws.code}.csv"'
        return response
    page = Paginator(entries, AUDIT_PAGE).get_page(form_id(request.GET.get("page")) or 1)
    query = request.GET.copy()
    query.pop("page", None)
    return TemplateResponse(
        request,
        "trackers/audit.html",
        {
            "workspace": ws,
            "form": form,
            "page": page,
            "query": query.urlencode(),
            "csv_query": _with(query, "csv"),
        },
    )


def _with(query, fmt: str) -> str:
    q = query.copy()
    q["format"] = fmt
    return str(q.urlencode())


def _detail_text(detail: dict) -> str:
    return json.dumps(detail, sort_keys=True, ensure_ascii=False) if detail else ""


def _csv_safe(value: str) -> str:
    """A cell a spreadsheet will not run as a formula (CSV injection)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
