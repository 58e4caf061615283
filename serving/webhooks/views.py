"""A tracker's webhook alerts: endpoints with their health, the delivery log, test events, resends."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from uuid import UUID

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils import timezone
from django.views.decorators.http import require_POST

from serving.models import (
    DeliveryAttempt,
    Grouping,
    WebhookDelivery,
    WebhookEndpoint,
)
from serving.webhooks import fanout, sending
from serving.webhooks import services as webhooks
from trackers.access import (
    Scope,
    get_tracker_for_user,
    require_role,
)
from trackers.forms import text_field
from trackers.http import PageRequest, bad_request
from trackers.models import CAN_IMPORT, Tracker
from trackers.text import nonfinite_problem


class EndpointForm(forms.Form):
    url = forms.CharField(
        max_length=2000, label="URL", help_text="https:// (checked: no private or loopback address)"
    )
    description = text_field(max_length=200, required=False)
    min_score = forms.FloatField(
        required=False,
        min_value=0,
        max_value=1,
        label="Only from score",
        help_text="empty: the threshold in use",
    )
    speaker_filter = text_field(max_length=120, required=False, label="Only lines of speaker")
    metadata_filter = forms.CharField(
        required=False,
        max_length=webhooks.FILTER_MAX_FIELDS * (2 * webhooks.FILTER_MAX_CHARS + 8),
        label="Only documents whose metadata has",
        help_text='JSON, e.g. {"region": "EU"}',
    )
    grouping = forms.ChoiceField(choices=Grouping.choices, initial=Grouping.TEXT)
    from_bulk = forms.BooleanField(required=False, initial=True, label="Bulk scoring jobs")
    from_import = forms.BooleanField(required=False, initial=True, label="Newly imported documents")
    from_api = forms.BooleanField(required=False, label="Prediction API calls")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["url"].help_text = (
            "http(s)://; this install delivers to private and loopback addresses too "
            "(TRACKERS_WEBHOOK_ALLOW_PRIVATE_TARGETS is on)"
            if settings.WEBHOOK_ALLOW_PRIVATE_TARGETS
            else "https://…, a public address; a receiver on this machine or the LAN needs "
            "TRACKERS_WEBHOOK_ALLOW_PRIVATE_TARGETS=1"
        )

    def clean_metadata_filter(self) -> dict[str, Any]:
        raw = (self.cleaned_data.get("metadata_filter") or "").strip()
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"not JSON: {exc}") from None
        except RecursionError:
            raise forms.ValidationError("nests too deeply: an object of names and plain values") from None
        if not isinstance(value, dict):
            raise forms.ValidationError('an object of field names and values, like {"region": "EU"}')
        if why := nonfinite_problem(value):
            raise forms.ValidationError(why)
        return value


def _alerts_tracker(request: PageRequest, code: UUID) -> Tracker:
    tracker = get_tracker_for_user(request.user, code)
    require_role(request.user, tracker.workspace, CAN_IMPORT)
    return tracker


def _endpoint_for(request: PageRequest, code: UUID) -> WebhookEndpoint:
    return Scope.of_user(request.user).find(
        WebhookEndpoint.objects.all(), workspace="tracker__workspace", allowed=CAN_IMPORT, code=code
    )


def _alerts_page(
    request: PageRequest,
    tracker: Tracker,
    form: EndpointForm,
    secret: tuple[WebhookEndpoint, str] | None = None,
) -> TemplateResponse:
    endpoints = list(WebhookEndpoint.objects.filter(tracker=tracker))
    health = webhooks.health(endpoints)
    return TemplateResponse(
        request,
        "serving/alerts.html",
        {
            "tracker": tracker,
            "workspace": tracker.workspace,
            "rows": [(e, health[e.pk], daily_chart(e)) for e in endpoints],
            "form": form,
            "new_secret": secret,
        },
        status=400 if form.is_bound and form.errors else 200,
    )


@login_required
def alerts(request: PageRequest, code: UUID) -> HttpResponse:
    """A tracker's webhook endpoints with their health, and a new one (its secret shown once)."""
    tracker = _alerts_tracker(request, code)
    if request.method != "POST":
        return _alerts_page(request, tracker, EndpointForm())
    form = EndpointForm(request.POST)
    if not form.is_valid():
        return _alerts_page(request, tracker, form)
    try:
        endpoint, secret = webhooks.create_endpoint(tracker=tracker, user=request.user, **form.cleaned_data)
    except webhooks.EndpointInvalid as exc:
        form.add_error(
            exc.field if exc.field in form.fields else None,
            exc.message if exc.field in form.fields else str(exc),
        )
        return _alerts_page(request, tracker, form)
    return _alerts_page(request, tracker, EndpointForm(), (endpoint, secret))


@login_required
def alert_endpoint(request: PageRequest, code: UUID) -> HttpResponse:
    """One endpoint's delivery log: every delivery with every attempt, newest first."""
    endpoint = _endpoint_for(request, code)
    page = Paginator(sending.deliveries_of(endpoint), 30).get_page(request.GET.get("page"))
    return TemplateResponse(
        request,
        "serving/alert_endpoint.html",
        {
            "endpoint": endpoint,
            "tracker": endpoint.tracker,
            "health": webhooks.health([endpoint])[endpoint.pk],
            "chart": daily_chart(endpoint),
            "page": page,
            "now": timezone.now(),
        },
    )


@login_required
@require_POST
def alert_action(request: PageRequest, code: UUID, action: str) -> HttpResponse:
    """Send a test event, rotate the secret, enable or disable, or delete an endpoint."""
    endpoint = _endpoint_for(request, code)
    tracker = endpoint.tracker
    if action == "test":
        fanout.send_test(endpoint)
        if request.POST.get("back") == "deliveries":
            messages.success(request, "A test event is queued: it appears below as it is delivered.")
            return redirect("alert-endpoint", code=endpoint.code)
    elif action == "rotate":
        secret = webhooks.rotate_secret(endpoint)
        return _alerts_page(request, tracker, EndpointForm(), (endpoint, secret))
    elif action == "enable":
        try:
            webhooks.update_endpoint(endpoint, enabled=request.POST.get("on") == "1")
        except webhooks.EndpointInvalid as exc:  # enabling checks the target again
            return bad_request(f"cannot enable {endpoint}: {exc}", status=422)
    elif action == "delete":
        webhooks.delete_endpoint(endpoint)
    else:
        raise Http404(f"no action {action!r}")
    return redirect("tracker-alerts", code=tracker.code)


@login_required
@require_POST
def resend_delivery(request: PageRequest, pk: int) -> HttpResponse:
    delivery = Scope.of_user(request.user).find(
        WebhookDelivery.objects.all(), workspace="endpoint__tracker__workspace", allowed=CAN_IMPORT, pk=pk
    )
    try:
        sending.resend(delivery)
    except webhooks.EndpointDisabled as exc:
        return bad_request(str(exc), status=exc.status)
    return redirect("alert-endpoint", code=delivery.endpoint.code)


def daily_chart(endpoint: WebhookEndpoint, days: int = 7) -> dict[str, Any]:
    """Attempts per day over ``days`` days, succeeded and failed, as stacked SVG bars."""
    today = webhooks.now().date()
    first = today - timedelta(days=days - 1)
    counts = {first + timedelta(days=i): [0, 0] for i in range(days)}
    for started, outcome in DeliveryAttempt.objects.filter(
        delivery__endpoint=endpoint, started_at__date__gte=first
    ).values_list("started_at", "outcome"):
        day = timezone.localtime(started).date()
        if day in counts:
            counts[day][0 if outcome == "succeeded" else 1] += 1
    top = max([ok + bad for ok, bad in counts.values()] + [1])
    width, height, gap = 280, 80, 6
    bar = (width - gap * (days - 1)) / days
    bars = []
    for i, (day, (ok, bad)) in enumerate(counts.items()):
        h_ok, h_bad = height * ok / top, height * bad / top
        bars.append(
            {
                "x": round(i * (bar + gap), 1),
                "w": round(bar, 1),
                "ok_y": round(height - h_ok, 1),
                "ok_h": round(h_ok, 1),
                "bad_y": round(height - h_ok - h_bad, 1),
                "bad_h": round(h_bad, 1),
                "ok": ok,
                "bad": bad,
                "day": day.strftime("%a %d"),
            }
        )
    return {"w": width, "h": height, "bars": bars, "total": sum(ok + bad for ok, bad in counts.values())}
