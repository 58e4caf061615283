from django.contrib import admin

from labeling.models import Annotation, Card, TrainingRun


@admin.register(Card)
class CardAdmin(admin.ModelAdmin):
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
    raw_id_fields = ["segment", "training_run", "claimed_by"]
    list_select_related = ["tracker", "claimed_by"]


@admin.register(Annotation)
class AnnotationAdmin(admin.ModelAdmin):
    list_display = ["segment", "answer", "annotator", "tracker", "strategy", "updated_at"]
    list_filter = ["answer", "strategy", "tracker", "annotator"]
    search_fields = ["segment__text"]
    raw_id_fields = ["segment", "card", "training_run"]
    list_select_related = ["segment", "annotator", "tracker"]


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = [
        "code",
        "tracker",
        "state",
        "attempt",
        "featurizer",
        "threshold",
        "duration_s",
        "created_at",
        "finished_at",
    ]
    list_filter = ["state", "featurizer", "tracker"]
    search_fields = ["code", "watermark"]
    readonly_fields = ["code", "watermark", "created_at", "started_at", "finished_at", "heartbeat_at"]
