"""The labeling game's queue of cards and the answers labelers give."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from trackers.models import Segment, Tracker


class Strategy(models.TextChoices):
    SEED_NEIGHBOUR = "seed_neighbour", "Near a seed"
    KEYWORD = "keyword", "Keyword match"
    UNCERTAIN = "uncertain", "Model unsure"
    POSITIVE = "positive", "Predicted match"
    RANDOM = "random", "Random sample"


class Card(models.Model):
    """A segment queued for a tracker's game; claimed by one labeler at a time until answered."""

    tracker = models.ForeignKey(Tracker, on_delete=models.CASCADE, related_name="cards")
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="+")
    round = models.PositiveIntegerField()
    strategy = models.CharField(max_length=20, choices=Strategy.choices)
    score = models.FloatField(null=True, blank=True)
    training_run = models.ForeignKey(
        "serving.TrainingRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    claimed_until = models.DateTimeField(null=True, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["round", "id"]
        constraints = [models.UniqueConstraint(fields=["tracker", "segment"], name="one_card_per_segment")]
        indexes = [models.Index(fields=["tracker", "answered_at", "claimed_until"], name="card_open")]

    def __str__(self) -> str:
        return f"card {self.pk} of {self.tracker} (round {self.round}, {self.strategy})"


class Annotation(models.Model):
    """One labeler's answer for one segment of one tracker; changing it updates the row."""

    SKIP = "skip"

    tracker = models.ForeignKey(Tracker, on_delete=models.CASCADE, related_name="annotations")
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="annotations")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="annotations"
    )
    answer = models.CharField(max_length=120)
    card = models.ForeignKey(
        Card, null=True, blank=True, on_delete=models.SET_NULL, related_name="annotations"
    )
    strategy = models.CharField(max_length=20, blank=True)
    training_run = models.ForeignKey(
        "serving.TrainingRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-updated_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["tracker", "segment", "annotator"], name="one_answer_per_labeler")
        ]
        indexes = [models.Index(fields=["tracker", "answer"], name="annotation_tracker_answer")]

    def __str__(self) -> str:
        return f"{self.annotator} said {self.answer} on {self.segment_id}"
