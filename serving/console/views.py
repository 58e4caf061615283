"""The console: a workspace's for its owners and admins, the whole install's for staff."""

from __future__ import annotations

from uuid import UUID

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import Http404, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from serving.console import services as console
from trackers import errors, health
from trackers.access import get_workspace_for_user, require_role
from trackers.http import PageRequest
from trackers.models import CAN_IMPORT, Tracker, Workspace


def _page(
    request: PageRequest, workspaces: QuerySet[Workspace] | None, workspace: Workspace | None
) -> HttpResponse:
    period = console.PERIODS.get(request.GET.get("period", ""), console.PERIODS["7d"])
    trackers = Tracker.objects.select_related("workspace").order_by("workspace__name", "name")
    if workspaces is not None:
        trackers = trackers.filter(workspace__in=workspaces)
    return TemplateResponse(
        request,
        "serving/console.html",
        {
            "workspace": workspace,
            "install": workspaces is None,
            "period": period,
            "periods": console.PERIODS.values(),
            "traffic": console.traffic_rows(list(trackers), period),
            "queues": health.queue_depths(),
            "workers": health.workers(),
            "failed": console.failed_work(workspaces),
            "storage": console.storage(workspaces),
            "health": console.health_checks(),
        },
    )


@login_required
def workspace_console(request: PageRequest, code: UUID) -> HttpResponse:
    """Traffic, alerts, queues, failed work, storage and health of one workspace."""
    ws = get_workspace_for_user(request.user, code)
    require_role(request.user, ws, CAN_IMPORT)
    return _page(request, Workspace.objects.filter(pk=ws.pk), ws)


@staff_member_required
def install_console(request: PageRequest) -> HttpResponse:
    """The same over every workspace of the install, for staff."""
    return _page(request, None, None)


@login_required
@require_POST
def retry(request: PageRequest, code: UUID) -> HttpResponse:
    """Queue a failed job, training run or scoring job (``kind``: job, run, scoring) again."""
    kind = request.POST.get("kind", "")
    if kind not in console.FAILED_KINDS:
        raise Http404("no such kind of work")
    workspace_code = request.POST.get("workspace", "")
    if workspace_code:
        ws = get_workspace_for_user(request.user, workspace_code)
        require_role(request.user, ws, CAN_IMPORT)
        scope: QuerySet[Workspace] | None = Workspace.objects.filter(pk=ws.pk)
    elif request.user.is_staff:
        scope = None
    else:
        raise Http404("no console here")
    try:
        row = console.retry_failed(kind, code, scope)
    except errors.Refused as exc:
        messages.error(request, exc.message)
    else:
        if row is None:
            raise Http404("no such failed work here")
        messages.success(request, "Queued again.")
    back = request.POST.get("back", "")
    if back and url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        return redirect(back)
    return redirect("home")
