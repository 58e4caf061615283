"""The tracker page's model versions panel: every version with its quality, which one is live,
promote and roll back, automatic promotion on or off, the standalone download."""

from __future__ import annotations

from uuid import UUID

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.views.decorators.http import require_POST

from serving.models import (
    ModelVersion,
)
from serving.versions import services
from trackers.access import (
    get_tracker_for_user,
    require_role,
    role_in,
)
from trackers.http import PageRequest, bad_request
from trackers.models import CAN_IMPORT, Tracker


def _panel(request: PageRequest, tracker: Tracker, refused: str = "") -> TemplateResponse:
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
            "automatic": services.promotes_automatically(tracker),
            "can_manage": role_in(request.user, tracker.workspace) in CAN_IMPORT,
            "refused": refused,
        },
        status=422 if refused else 200,  # htmx swaps a 422 in (base.html), so the reason shows
    )


@login_required
def versions(request: PageRequest, code: UUID) -> HttpResponse:
    return _panel(request, get_tracker_for_user(request.user, code))


@login_required
@require_POST
def promote(request: PageRequest, code: UUID, number: int) -> HttpResponse:
    """Make a version live: a newer one, or an older one (a rollback)."""
    tracker = get_tracker_for_user(request.user, code)
    require_role(request.user, tracker.workspace, CAN_IMPORT)
    try:
        services.promote(get_object_or_404(ModelVersion, tracker=tracker, number=number), request.user)
    except services.VersionRefused as exc:
        if not request.htmx:
            return bad_request(str(exc), status=exc.status)
        return _panel(request, tracker, refused=str(exc))
    if not request.htmx:  # the tracker page's own button (a page that works without JS)
        return redirect("tracker", code=tracker.code)
    return _panel(request, tracker)


@login_required
@require_POST
def automatic(request: PageRequest, code: UUID) -> HttpResponse:
    """Turn automatic promotion on or off."""
    tracker = get_tracker_for_user(request.user, code)
    require_role(request.user, tracker.workspace, CAN_IMPORT)
    services.set_automatic_promotion(tracker, request.POST.get("on") == "1")
    return _panel(request, tracker)


@login_required
def download(request: PageRequest, code: UUID, number: int) -> HttpResponse | FileResponse:
    """The standalone model of a version: one zip with the ONNX file, the tokenizer and the manifest."""
    tracker = get_tracker_for_user(request.user, code)
    version = get_object_or_404(ModelVersion, tracker=tracker, number=number)
    try:
        path = services.standalone_zip(version)
    except services.NoStandalone as exc:
        return bad_request(str(exc), status=409)
    return FileResponse(  # noqa: SIM115 (the response closes it)
        open(path, "rb"), as_attachment=True, filename=services.download_name(version)
    )


@login_required
@require_POST
def threshold(request: PageRequest, code: UUID) -> HttpResponse:
    """Owners move the live version's threshold along the precision/recall curve, or give it back to
    training ("auto"); it stays with that version."""
    tracker = get_tracker_for_user(request.user, code)
    require_role(request.user, tracker.workspace, CAN_IMPORT)
    raw = request.POST.get("threshold", "")
    value: float | None = None
    if raw != "auto":
        try:
            value = float(raw)
        except ValueError:
            shown = raw if len(raw) <= 40 else raw[:40] + "…"
            return bad_request(f"threshold must be a number between 0 and 1, or 'auto' (got '{shown}')")
    live = services.live_version(tracker)
    if live is None:
        return bad_request("no version is live yet: there is no threshold in use to move", status=409)
    try:
        services.set_threshold(live, request.user, value)
    except services.ThresholdRefused as exc:
        return bad_request(str(exc), status=exc.status)
    return redirect("tracker", code=tracker.code)
