from django.contrib import admin, messages

from serving.models import ApiKey, ModelVersion, ScoredSegment, ScoringJob
from trackers import generation


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

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        key, raw = ApiKey.issue(
            workspace=obj.workspace, name=obj.name, role=obj.role, created_by=request.user
        )
        obj.pk, obj.prefix, obj.key_hash = key.pk, key.prefix, key.key_hash
        messages.warning(request, f"New API key (shown once, copy it now): {raw}")

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        from django.utils import timezone

        queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        generation.bump()  # every process drops the keys it knows


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

    def has_change_permission(self, request, obj=None) -> bool:
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
