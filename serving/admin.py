"""Serving's records in the Django admin: read-only, with the actions staff need (promote or roll
back a version, revoke keys, resend deliveries, retry scoring), each through the app's own service."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from serving.keys import services as keys
from serving.models import (
    ApiKey,
    DeliveryAttempt,
    LiveFeedback,
    LiveKeeping,
    LiveText,
    ModelVersion,
    PromotionPolicy,
    ScoredSegment,
    ScoringJob,
    TrafficMinute,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from serving.versions import services as versions
from serving.webhooks import sending
from trackers import errors
from trackers.access import Scope
from trackers.admin import ReadOnlyInline, SystemRecordAdmin, retry_failed


@admin.register(ApiKey)
class ApiKeyAdmin(SystemRecordAdmin):
    """Keys are made by members on their workspace's keys page (shown once there); revoked here too."""

    list_display = [
        "name",
        "prefix",
        "workspace",
        "role",
        "created_by",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["role", "workspace"]
    search_fields = ["name", "prefix"]
    exclude = ["key_hash"]
    actions = ["revoke"]

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        staff = Scope({}, request.user)
        for key in queryset.filter(revoked_at__isnull=True).select_related("workspace"):
            staff.roles[key.workspace_id] = "owner"  # staff act as the install's owner here
            keys.revoke_key(staff, key)
        messages.success(request, "Revoked.")


@admin.register(PromotionPolicy)
class PromotionPolicyAdmin(SystemRecordAdmin):
    """Whether a tracker's new versions go live by themselves (set on the tracker's versions panel)."""

    list_display = ["tracker", "automatic"]
    list_filter = ["automatic"]


@admin.register(ModelVersion)
class ModelVersionAdmin(SystemRecordAdmin):
    """Versions are written once by training and never edited; one can be made live from here."""

    list_display = ["tracker", "number", "is_live", "went_live_at", "went_live_by", "created_at"]
    list_filter = ["is_live", "tracker__kind"]
    search_fields = ["tracker__name", "code"]
    actions = ["make_live"]

    @admin.action(description="Make the selected version live (promote, or roll back to it)")
    def make_live(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        chosen = list(queryset.select_related("tracker__workspace")[:2])
        if len(chosen) != 1:
            messages.error(request, "Choose exactly one version: a tracker has one live version.")
            return
        try:
            versions.promote(chosen[0], request.user)  # type: ignore[arg-type]
        except errors.Refused as exc:
            messages.error(request, exc.message)
            return
        messages.success(request, f"{chosen[0].tracker.name} v{chosen[0].number} is live.")


@admin.register(ScoringJob)
class ScoringJobAdmin(SystemRecordAdmin):
    list_display = ["dataset", "state", "processed", "total", "error", "created_at", "finished_at"]
    list_filter = ["state"]
    search_fields = ["dataset__name", "code"]
    actions = ["retry"]

    @admin.action(description="Retry the selected failed scoring jobs")
    def retry(self, request: HttpRequest, queryset: QuerySet[ScoringJob]) -> None:
        retry_failed(
            request,
            queryset.select_related("workspace", "dataset"),
            lambda j: j.workspace,
            lambda j: f"scoring of {j.dataset.name}",
        )


@admin.register(ScoredSegment)
class ScoredSegmentAdmin(SystemRecordAdmin):
    list_display = ["job", "version", "segment", "score", "label", "match", "feedback"]
    list_filter = ["match", "feedback"]


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(SystemRecordAdmin):
    """Endpoints without their secrets (shown once, on the tracker's alerts page, where they are
    changed: a target is checked there against private addresses)."""

    list_display = ["url", "tracker", "enabled", "grouping", "failing_since", "created_at"]
    list_filter = ["enabled", "grouping"]
    search_fields = ["url", "description", "tracker__name"]
    exclude = ["secret", "previous_secret"]


class AttemptInline(ReadOnlyInline):
    model = DeliveryAttempt
    fields = readonly_fields = (
        "number",
        "started_at",
        "duration_ms",
        "status_code",
        "outcome",
        "error",
        "response_excerpt",
    )


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(SystemRecordAdmin):
    list_display = ["pk", "endpoint", "state", "tries", "last_status", "next_attempt_at", "created_at"]
    list_filter = ["state"]
    inlines = [AttemptInline]
    actions = ["resend"]

    @admin.action(description="Resend the selected deliveries")
    def resend(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        for delivery in queryset.select_related("endpoint"):
            try:
                sending.resend(delivery)
            except errors.Refused as exc:
                messages.warning(request, f"delivery {delivery.pk}: {exc.message}")
        messages.success(request, "Queued again.")


@admin.register(WebhookEvent)
class WebhookEventAdmin(SystemRecordAdmin):
    """Events as sent (their bodies never change)."""

    list_display = ["webhook_id", "type", "source", "tracker", "created_at"]
    list_filter = ["type", "source"]


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(SystemRecordAdmin):
    list_display = ["delivery", "number", "started_at", "status_code", "outcome", "duration_ms"]
    list_filter = ["outcome"]


@admin.register(TrafficMinute)
class TrafficMinuteAdmin(SystemRecordAdmin):
    """Traffic per tracker and minute (or hour, once older), as the console charts it."""

    list_display = ["tracker", "start", "span_minutes", "predictions", "matches"]
    list_filter = ["span_minutes"]


@admin.register(LiveKeeping)
class LiveKeepingAdmin(SystemRecordAdmin):
    """What each tracker keeps of its live texts (set on the tracker page)."""

    list_display = ["tracker", "mode", "per_day", "changed_by", "changed_at"]
    list_filter = ["mode"]


@admin.register(LiveFeedback)
class LiveFeedbackAdmin(SystemRecordAdmin):
    """Right or wrong said about live decisions, from alerts' receivers and prediction callers."""

    list_display = ["tracker", "created_at", "verdict", "matched", "answer", "given_by", "via"]
    list_filter = ["verdict", "matched"]
    search_fields = ["text"]


@admin.register(LiveText)
class LiveTextAdmin(SystemRecordAdmin):
    """Texts live trackers kept, until they expire."""

    list_display = ["tracker", "created_at", "source", "score", "matched", "probability"]
    list_filter = ["source", "matched"]
    search_fields = ["text"]
