"""The Django admin for staff: branded, with the records the system makes read-only (they are
changed through the app's own services, which check and record what they do)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from trackers import errors, work
from trackers.models import (
    AccessGeneration,
    AuditEntry,
    Dataset,
    Document,
    EmbedPart,
    Invitation,
    Job,
    Membership,
    SeedExample,
    Segment,
    Tracker,
    Workspace,
)

admin.site.site_header = "Trackers administration"
admin.site.site_title = "Trackers administration"
admin.site.index_title = "Everything in this install"


class SystemRecordAdmin(admin.ModelAdmin):
    """A record the system makes and keeps: read here, never added, edited or deleted by hand."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def retry_failed(request: HttpRequest, rows: QuerySet, workspace_of: Any, what_of: Any) -> None:
    """Queue the failed ones of ``rows`` again (``work.retry``), saying which could not be."""
    done = 0
    for row in rows:
        try:
            work.retry(row, workspace=workspace_of(row), what=what_of(row))
            done += 1
        except errors.Refused as exc:
            messages.warning(request, f"{what_of(row)}: {exc.message}")
    if done:
        messages.success(request, f"{done} queued again.")


class MembershipInline(ReadOnlyInline):
    """Members are invited, changed and removed on the workspace's Members page (which keeps the last
    owner and records each change)."""

    model = Membership
    fields = readonly_fields = ("user", "role", "created_at")


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ["name", "code", "created_at"]
    search_fields = ["name", "code"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(SystemRecordAdmin):
    """Read here; managed on the workspace's Members page."""

    list_display = ["user", "workspace", "role", "created_at"]
    list_filter = ["role", "workspace"]
    search_fields = ["user__username", "user__email", "workspace__name"]


@admin.register(Invitation)
class InvitationAdmin(SystemRecordAdmin):
    list_display = ["workspace", "role", "email", "created_by", "created_at", "expires_at", "state"]
    list_filter = ["role"]
    search_fields = ["email", "workspace__name"]
    exclude = ["token_hash"]


@admin.register(AuditEntry)
class AuditEntryAdmin(SystemRecordAdmin):
    """Who did what, install-wide; never edited."""

    list_display = ["created_at", "workspace_name", "actor_name", "via", "action", "target"]
    list_filter = ["action", "via"]
    search_fields = ["actor_name", "workspace_name", "target", "target_code", "request_id"]
    date_hierarchy = "created_at"


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


class EmbedPartInline(ReadOnlyInline):
    model = EmbedPart
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


@admin.register(EmbedPart)
class EmbedPartAdmin(SystemRecordAdmin):
    list_display = ["job", "number", "state", "segments", "processed", "stored", "attempts", "heartbeat_at"]
    list_filter = ["state"]
    raw_id_fields = ["job"]
    readonly_fields = ["code", "created_at", "started_at", "heartbeat_at", "finished_at"]


@admin.register(Job)
class JobAdmin(SystemRecordAdmin):
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
    inlines = [EmbedPartInline]
    actions = ["retry"]

    @admin.action(description="Retry the selected failed jobs")
    def retry(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        retry_failed(request, queryset.select_related("workspace", "dataset"), lambda j: j.workspace, str)


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
class AccessGenerationAdmin(SystemRecordAdmin):
    """The counter web processes watch to drop what they keep; it moves by itself, read-only here."""

    list_display = ["id", "scope", "value"]
