"""The tracker page's model versions panel (every version with its quality, which one is live,
promote and roll back, automatic promotion on or off, the standalone download) and the
workspace's API keys page."""

from __future__ import annotations

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.utils import timezone
from django.views.decorators.http import require_POST

from serving import services
from serving.models import ApiKey, ModelVersion
from trackers.access import get_tracker_for_user, get_workspace_for_user, require_role, role_in
from trackers.forms import text_field
from trackers.http import PageRequest
from trackers.models import CAN_IMPORT, Role, Tracker, Workspace


def _panel(request: PageRequest, tracker: Tracker) -> TemplateResponse:
    versions = list(
        ModelVersion.objects.filter(tracker=tracker).select_related("tracker", "training_run", "went_live_by")
    )
    return TemplateResponse(
        request,
        "serving/_versions.html",
        {
            "tracker": tracker,
            "versions": versions,
            "live": next((v for v in versions if v.is_live), None),
            "can_manage": role_in(request.user, tracker.workspace) in CAN_IMPORT,
        },
    )


@login_required
def versions(request: PageRequest, code) -> HttpResponse:
    return _panel(request, get_tracker_for_user(request.user, code))


@login_required
@require_POST
def promote(request: PageRequest, code, number: int) -> HttpResponse:
    """Make a version live: a newer one, or an older one (a rollback)."""
    tracker = get_tracker_for_user(request.user, code)
    require_role(request.user, tracker.workspace, CAN_IMPORT)
    services.promote(get_object_or_404(ModelVersion, tracker=tracker, number=number), request.user)
    return _panel(request, tracker)


@login_required
@require_POST
def automatic(request: PageRequest, code) -> HttpResponse:
    """Turn automatic promotion on or off."""
    tracker = get_tracker_for_user(request.user, code)
    require_role(request.user, tracker.workspace, CAN_IMPORT)
    tracker.promote_automatically = request.POST.get("on") == "1"
    tracker.save(update_fields=["promote_automatically"])
    return _panel(request, tracker)


@login_required
def download(request: PageRequest, code, number: int) -> FileResponse:
    """The standalone model of a version: one zip with the ONNX file, the tokenizer and the manifest."""
    tracker = get_tracker_for_user(request.user, code)
    version = get_object_or_404(ModelVersion, tracker=tracker, number=number)
    path = services.standalone_zip(version)
    return FileResponse(open(path, "rb"), as_attachment=True, filename=path.name)  # noqa: SIM115


class KeyForm(forms.Form):
    name = text_field(max_length=120)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.LABELER)
    predict_only = forms.BooleanField(required=False, label="Prediction only")
    trackers = forms.ModelMultipleChoiceField(
        queryset=Tracker.objects.none(), required=False, help_text="none chosen: every tracker"
    )

    def __init__(self, *args, workspace: Workspace, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["trackers"].queryset = workspace.trackers.order_by("name")  # type: ignore[attr-defined]


def _keys_page(
    request: PageRequest, ws: Workspace, form: KeyForm, raw: str | None = None
) -> TemplateResponse:
    return TemplateResponse(
        request,
        "serving/keys.html",
        {
            "workspace": ws,
            "keys": ApiKey.objects.filter(workspace=ws)
            .select_related("created_by")
            .prefetch_related("trackers"),
            "form": form,
            "new_key": raw,
        },
        status=200 if form.is_bound is False or not form.errors else 400,
    )


@login_required
def keys(request: PageRequest, code) -> HttpResponse:
    """The workspace's API keys: made here (the secret is shown once), limited, revoked."""
    ws = get_workspace_for_user(request.user, code)
    require_role(request.user, ws, CAN_IMPORT)
    if request.method != "POST":
        return _keys_page(request, ws, KeyForm(workspace=ws))
    form = KeyForm(request.POST, workspace=ws)
    if not form.is_valid():
        return _keys_page(request, ws, form)
    _, raw = ApiKey.issue(
        workspace=ws,
        name=form.cleaned_data["name"],
        created_by=request.user,
        role=form.cleaned_data["role"],
        trackers=list(form.cleaned_data["trackers"]),
        predict_only=form.cleaned_data["predict_only"],
    )
    return _keys_page(request, ws, KeyForm(workspace=ws), raw)


@login_required
@require_POST
def revoke_key(request: PageRequest, code, key_id: int) -> HttpResponse:
    ws = get_workspace_for_user(request.user, code)
    require_role(request.user, ws, CAN_IMPORT)
    ApiKey.objects.filter(workspace=ws, pk=key_id, revoked_at__isnull=True).update(revoked_at=timezone.now())
    return redirect("api-keys", code=ws.code)
