"""The workspace's API keys page: make a key (its secret shown once), list and revoke them."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.views.decorators.http import require_POST

from serving.keys import services as keys
from serving.models import (
    ApiKey,
)
from trackers.access import (
    Scope,
    get_workspace_for_user,
    require_role,
)
from trackers.forms import text_field
from trackers.http import PageRequest
from trackers.models import CAN_IMPORT, Role, Tracker, Workspace


class KeyForm(forms.Form):
    name = text_field(max_length=120)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.LABELER, help_text="at most your own")
    predict_only = forms.BooleanField(required=False, label="Prediction only")
    trackers = forms.ModelMultipleChoiceField(
        queryset=Tracker.objects.none(), required=False, help_text="none chosen: every tracker"
    )

    def __init__(self, *args: Any, workspace: Workspace, roles: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = roles  # type: ignore[attr-defined]
        self.fields["trackers"].queryset = workspace.trackers.order_by("name")  # type: ignore[attr-defined]


def _keys_page(
    request: PageRequest, ws: Workspace, form: KeyForm | None = None, raw: str | None = None
) -> TemplateResponse:
    scope = Scope.of_user(request.user)
    if form is None:
        form = KeyForm(workspace=ws, roles=keys.roles_to_give(scope, ws))
    shown = list(keys.visible_keys(scope, ws).select_related("created_by").prefetch_related("trackers"))
    for key in shown:
        key.revocable = key.revoked_at is None and keys.may_revoke(scope, key)  # type: ignore[attr-defined]
    return TemplateResponse(
        request,
        "serving/keys.html",
        {"workspace": ws, "keys": shown, "form": form, "new_key": raw},
        status=200 if form.is_bound is False or not form.errors else 400,
    )


@login_required
def keys_page(request: PageRequest, code: UUID) -> HttpResponse:
    """The workspace's API keys: made here (the secret is shown once), limited, revoked; never with
    more rights than the member who makes them."""
    ws = get_workspace_for_user(request.user, code)
    require_role(request.user, ws, CAN_IMPORT)
    if request.method != "POST":
        return _keys_page(request, ws)
    scope = Scope.of_user(request.user)
    form = KeyForm(request.POST, workspace=ws, roles=keys.roles_to_give(scope, ws))
    if not form.is_valid():
        return _keys_page(request, ws, form)
    _, raw = keys.issue_key(
        scope,
        ws,
        name=form.cleaned_data["name"],
        role=form.cleaned_data["role"],
        trackers=list(form.cleaned_data["trackers"]),
        predict_only=form.cleaned_data["predict_only"],
    )
    return _keys_page(request, ws, raw=raw)


@login_required
@require_POST
def revoke_key(request: PageRequest, code: UUID, key_id: int) -> HttpResponse:
    ws = get_workspace_for_user(request.user, code)
    require_role(request.user, ws, CAN_IMPORT)
    keys.revoke_key(Scope.of_user(request.user), get_object_or_404(ApiKey, workspace=ws, pk=key_id))
    return redirect("api-keys", code=ws.code)


# --- Bulk scoring ---------------------------------------------------------------------------
