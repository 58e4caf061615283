"""The tracker page's "In production" panel: traffic per day, the match rate around promotions, live
scores against the training pool's with a drift warning, wrong live decisions, what the tracker
keeps; and the review of live traffic as a round of the game."""

from __future__ import annotations

from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.views.decorators.http import require_POST

from labeling import services as learning
from serving.live import production
from serving.live import services as live
from serving.models import KeepMode
from serving.versions import services as versions
from trackers import errors
from trackers.access import get_tracker_for_user, require_role, role_in
from trackers.http import PageRequest, form_id
from trackers.models import CAN_IMPORT, CAN_LABEL, Tracker


def _panel(request: PageRequest, tracker: Tracker, problem: str = "", status: int = 200) -> HttpResponse:
    return TemplateResponse(
        request,
        "serving/live.html#live-panel",
        {
            "tracker": tracker,
            "keeping": live.kept_summary(tracker),
            "modes": [(KeepMode.OFF, "nothing"), (KeepMode.ALL, "every text"), (KeepMode.SAMPLE, "a sample")],
            "can_manage": role_in(request.user, tracker.workspace) in CAN_IMPORT,
            "can_label": role_in(request.user, tracker.workspace) in CAN_LABEL,
            "production": production.overview(tracker),
            "problem": problem,
        },
        status=status,
    )


@login_required
def panel(request: PageRequest, code: UUID) -> HttpResponse:
    """What the tracker keeps of the texts its live versions score, and for how long."""
    return _panel(request, get_tracker_for_user(request.user, code))


@login_required
@require_POST
def keeping(request: PageRequest, code: UUID) -> HttpResponse:
    """Owners and admins choose: keep nothing, every text, or a sample of at most N a day."""
    tracker = get_tracker_for_user(request.user, code)
    require_role(request.user, tracker.workspace, CAN_IMPORT)
    per_day = form_id(request.POST.get("per_day")) or 0
    try:
        live.set_keeping(tracker, mode=request.POST.get("mode", ""), per_day=per_day, by=request.user)
    except errors.Refused as exc:
        if not request.htmx:
            return _panel(request, tracker, exc.message, exc.status)
        return _panel(request, tracker, exc.message, 422)
    if not request.htmx:
        return redirect("tracker", code=tracker.code)
    return _panel(request, tracker)


@login_required
@require_POST
def review(request: PageRequest, code: UUID) -> HttpResponse:
    """Labelers and up start a round of the tracker's kept live texts, then play it."""
    tracker = get_tracker_for_user(request.user, code)
    require_role(request.user, tracker.workspace, CAN_LABEL)
    live.gather(tracker)  # what was kept since the last gathering joins first
    version = versions.live_version(tracker)
    threshold = versions.threshold_of(version)[0] if version is not None else None
    try:
        learning.start_review_round(
            tracker, version.training_run if version else None, threshold, by=request.user
        )
    except errors.Refused as exc:
        messages.error(request, exc.message)
        return redirect("tracker", code=tracker.code)
    return redirect("play", code=tracker.code)
