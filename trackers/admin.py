from django.contrib import admin

from trackers.models import (
    AccessGeneration,
    Dataset,
    Document,
    EmbedPart,
    Job,
    Membership,
    SeedExample,
    Segment,
    Tracker,
    Workspace,
)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ["name", "code", "created_at"]
    search_fields = ["name", "code"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "workspace", "role", "created_at"]
    list_filter = ["role", "workspace"]
    search_fields = ["user__username", "user__email", "workspace__name"]
    autocomplete_fields = ["user", "workspace"]


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "workspace",
        "vector_count",
        "index_kind",
        "index_size",
        "index_built_at",
        "encoder_id",
    ]
    list_filter = ["workspace", "index_kind"]
    search_fields = ["name", "code", "description"]
    readonly_fields = [
        "code",
        "encoder_id",
        "vector_count",
        "index_file",
        "index_kind",
        "index_size",
        "index_built_at",
    ]


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ["title", "kind", "external_id", "dataset", "occurred_at", "created_at"]
    list_filter = ["kind", "dataset__workspace", "dataset"]
    search_fields = ["title", "external_id", "code"]
    raw_id_fields = ["dataset", "imported_by_job"]


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    list_display = ["short_text", "speaker", "position", "document", "known_label", "vector_row"]
    list_filter = ["dataset", "speaker", "known_label"]
    search_fields = ["text", "document__title"]
    raw_id_fields = ["dataset", "document"]
    list_select_related = ["document"]

    @admin.display(description="text")
    def short_text(self, obj: Segment) -> str:
        return obj.text[:80]


class EmbedPartInline(admin.TabularInline):
    model = EmbedPart
    extra = 0
    fields = readonly_fields = (
        "number",
        "state",
        "segments",
        "processed",
        "stored",
        "attempts",
        "heartbeat_at",
        "error",
    )
    can_delete = False


@admin.register(EmbedPart)
class EmbedPartAdmin(admin.ModelAdmin):
    list_display = ["job", "number", "state", "segments", "processed", "stored", "attempts", "heartbeat_at"]
    list_filter = ["state"]
    raw_id_fields = ["job"]
    readonly_fields = ["code", "created_at", "started_at", "heartbeat_at", "finished_at"]


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = [
        "code",
        "kind",
        "state",
        "dataset",
        "processed",
        "total",
        "attempts",
        "created_at",
        "finished_at",
    ]
    list_filter = ["kind", "state", "workspace"]
    search_fields = ["code", "message"]
    raw_id_fields = ["dataset", "created_by"]
    readonly_fields = ["code", "created_at", "started_at", "heartbeat_at", "finished_at"]
    inlines = [EmbedPartInline]


class SeedInline(admin.TabularInline):
    model = SeedExample
    extra = 0
    raw_id_fields = ["segment"]


@admin.register(Tracker)
class TrackerAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "workspace",
        "kind",
        "granularity",
        "state",
        "target_precision",
        "last_trained_at",
    ]
    list_filter = ["state", "kind", "granularity", "workspace"]
    search_fields = ["name", "description", "code"]
    filter_horizontal = ["datasets"]
    inlines = [SeedInline]


@admin.register(SeedExample)
class SeedExampleAdmin(admin.ModelAdmin):
    list_display = ["text", "label", "tracker"]
    list_filter = ["tracker"]
    search_fields = ["text"]
    raw_id_fields = ["segment"]


@admin.register(AccessGeneration)
class AccessGenerationAdmin(admin.ModelAdmin):
    """The counter web processes watch to drop what they keep; it moves by itself, read-only here."""

    list_display = ["id", "value"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_add_permission(self, request) -> bool:
        return False
