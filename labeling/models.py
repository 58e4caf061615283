"""The learning loop's rows: cards queued for the game, the answers labelers give, training runs."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from trackers.models import ClaimableWork, Segment, Tracker


class Strategy(models.TextChoices):
    SEED_NEIGHBOUR = "seed_neighbour", "Near an example"
    KEYWORD = "keyword", "Keyword match"
    UNCERTAIN = "uncertain", "Model unsure"
    POSITIVE = "positive", "Predicted match"
    RANDOM = "random", "Random sample"
    EXAMPLE = "example", "An example given when the tracker was made"
    FEEDBACK = "feedback", "Marked right or wrong on scored results"
    CHECK = "check", "Checking what it misses"
    NEGATIVE = "negative", "Predicted no match"


class Card(models.Model):
    """A segment queued for a tracker's game; claimed by one labeler at a time until answered."""

    tracker = models.ForeignKey(Tracker, on_delete=models.CASCADE, related_name="cards")
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="+")
    round = models.PositiveIntegerField()
    strategy = models.CharField(max_length=20, choices=Strategy.choices)
    score = models.FloatField(null=True, blank=True)
    label = models.CharField(max_length=120, blank=True)  # a topic tracker's predicted label ("": none)
    # The chance this text had of being drawn for its round (see labeling.ml.selection): the
    # estimates weigh its answer by it. Null on cards made before it was kept.
    probability = models.FloatField(null=True, blank=True)
    training_run = models.ForeignKey(
        "TrainingRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    claimed_until = models.DateTimeField(null=True, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    # Not stored: what a page or the API shows around the card, set by the views and the API.
    previous: Segment | None
    next: Segment | None
    lines: list[Segment]
    key_ids: set[int]
    key_lines: list[Segment]
    _neighbours: tuple[Segment | None, Segment | None]

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
        "TrainingRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
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


class TrainingState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    # The answers cannot train a model yet (one class only); the next round is filled all the same.
    NEEDS_ANSWERS = "needs_answers", "Needs more answers"
    FAILED = "failed", "Failed"


class TrainingRun(ClaimableWork):
    """One training of a tracker's head on the answers up to ``watermark``.

    At most one run per watermark is queued, running or done: asking again for the same answers
    returns it. A failed run steps aside (the constraint leaves failed runs out), so "Train now"
    after a failure makes a new attempt; ``attempt`` counts them.
    """

    task = "labeling.tasks.train_tracker"

    state = models.CharField(max_length=16, choices=TrainingState.choices, default=TrainingState.QUEUED)
    tracker = models.ForeignKey(Tracker, on_delete=models.CASCADE, related_name="training_runs")
    watermark = models.CharField(max_length=64)  # fingerprint of the answers it was asked for
    attempt = models.PositiveSmallIntegerField(default=1)
    label_counts = models.JSONField(default=dict, blank=True)
    featurizer = models.CharField(max_length=32, blank=True)
    # Training's own choice; the threshold in use is derived (see Tracker.threshold_in_use).
    threshold = models.FloatField(null=True, blank=True)
    threshold_rule = models.CharField(max_length=64, blank=True)
    metrics = models.JSONField(default=dict, blank=True)  # cross-validated numbers, curves, pool counts
    head_file = models.CharField(max_length=255, blank=True)
    duration_s = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["tracker", "watermark"],
                condition=~Q(state="failed"),
                name="one_live_run_per_watermark",
            )
        ]

    def __str__(self) -> str:
        return f"training of {self.tracker} at {self.watermark[:8]} ({self.state})"

    @property
    def has_model(self) -> bool:
        return self.state == TrainingState.SUCCEEDED and bool(self.head_file)
