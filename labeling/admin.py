"""The game's records in the Django admin, read-only: cards are the game's picks, answers are given
in the game (which keeps one per text and labeler), runs are made by training; failed runs can be
retried."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from labeling.models import Annotation, Card, TrainingRun
from trackers.admin import SystemRecordAdmin, retry_failed


@admin.register(Card)
class CardAdmin(SystemRecordAdmin):
    list_display = [
        "id",
        "tracker",
        "round",
        "strategy",
        "score",
        "claimed_by",
        "claimed_until",
        "answered_at",
    ]
    list_filter = ["strategy", "round", "tracker"]
    list_select_related = ["tracker", "claimed_by"]


@admin.register(Annotation)
class AnnotationAdmin(SystemRecordAdmin):
    list_display = ["segment", "answer", "annotator", "tracker", "strategy", "updated_at"]
    list_filter = ["answer", "strategy", "tracker", "annotator"]
    search_fields = ["segment__text"]
    list_select_related = ["segment", "annotator", "tracker"]


@admin.register(TrainingRun)
class TrainingRunAdmin(SystemRecordAdmin):
    list_display = [
        "code",
        "tracker",
        "state",
        "attempt",
        "featurizer",
        "threshold",
        "duration_s",
        "error",
        "created_at",
        "finished_at",
    ]
    list_filter = ["state", "featurizer", "tracker"]
    search_fields = ["code", "watermark"]
    actions = ["retry"]

    @admin.action(description="Retry the selected failed training runs")
    def retry(self, request: HttpRequest, queryset: QuerySet[TrainingRun]) -> None:
        retry_failed(
            request,
            queryset.select_related("tracker__workspace"),
            lambda r: r.tracker.workspace,
            lambda r: f"training of {r.tracker.name}",
        )
