from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from serving.keys import services as keys
from serving.models import (
    ApiKey,
    DeliveryAttempt,
    ModelVersion,
    PromotionPolicy,
    ScoredSegment,
    ScoringJob,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "workspace", "role", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["role", "workspace"]
    search_fields = ["name", "prefix"]
    readonly_fields = ["prefix", "key_hash", "created_at", "last_used_at"]
    fields = [
        "workspace",
        "name",
        "role",
        "prefix",
        "key_hash",
        "created_by",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    actions = ["revoke"]

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            return super().save_model(request, obj, form, change)
        key, raw = ApiKey.issue(
            workspace=obj.workspace, name=obj.name, role=obj.role, created_by=request.user
        )
        obj.pk, obj.prefix, obj.key_hash = key.pk, key.prefix, key.key_hash
        messages.warning(request, f"New API key (shown once, copy it now): {raw}")

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        keys.revoke_keys(queryset)


@admin.register(PromotionPolicy)
class PromotionPolicyAdmin(admin.ModelAdmin):
    """Whether a tracker's new versions go live by themselves (a tracker without a row: they do)."""

    list_display = ["tracker", "automatic"]
    list_filter = ["automatic"]
    raw_id_fields = ["tracker"]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    """Versions are written once by training; here they are read (promotion is on the tracker page)."""

    list_display = [
        "tracker",
        "number",
        "is_live",
        "went_live_at",
        "created_at",
    ]
    list_filter = ["is_live", "tracker__kind"]
    search_fields = ["tracker__name", "code"]
    raw_id_fields = ["tracker", "training_run", "went_live_by"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ScoringJob)
class ScoringJobAdmin(admin.ModelAdmin):
    list_display = ["dataset", "state", "processed", "total", "created_at", "finished_at"]
    list_filter = ["state"]
    search_fields = ["dataset__name", "code"]
    raw_id_fields = ["workspace", "dataset", "created_by"]
    filter_horizontal = ["versions"]


@admin.register(ScoredSegment)
class ScoredSegmentAdmin(admin.ModelAdmin):
    list_display = ["job", "version", "segment", "score", "label", "match", "feedback"]
    list_filter = ["match", "feedback"]
    raw_id_fields = ["job", "version", "segment", "feedback_by"]


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    """Endpoints without their secrets: those are shown once, on the tracker's alerts page."""

    list_display = ["url", "tracker", "enabled", "grouping", "failing_since", "created_at"]
    list_filter = ["enabled", "grouping"]
    search_fields = ["url", "description", "tracker__name"]
    raw_id_fields = ["tracker", "created_by"]
    exclude = ["secret", "previous_secret"]
    readonly_fields = ["failing_since", "disabled_reason", "previous_secret_until"]


class AttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    readonly_fields = [
        "number",
        "started_at",
        "duration_ms",
        "status_code",
        "outcome",
        "error",
        "response_excerpt",
    ]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["pk", "endpoint", "state", "tries", "last_status", "next_attempt_at", "created_at"]
    list_filter = ["state"]
    raw_id_fields = ["event", "endpoint"]
    readonly_fields = ["tries", "last_status", "delivered_at", "error"]
    inlines = [AttemptInline]


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    """Events as sent (their bodies never change); read here, resent from the endpoint's page."""

    list_display = ["webhook_id", "type", "source", "tracker", "created_at"]
    list_filter = ["type", "source"]
    raw_id_fields = ["tracker"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(admin.ModelAdmin):
    list_display = ["delivery", "number", "started_at", "status_code", "outcome", "duration_ms"]
    list_filter = ["outcome"]
    raw_id_fields = ["delivery"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
