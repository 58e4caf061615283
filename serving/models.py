"""Model versions (a trained head as immutable ONNX, one live per tracker), API keys, bulk scoring
and webhook alerts (endpoints, events, deliveries and their attempts)."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from labeling.models import TrainingRun
from trackers import bucket
from trackers.models import (
    ClaimableWork,
    Dataset,
    Job,
    Membership,
    ProgressWork,
    Role,
    Segment,
    Tracker,
    TrackerKind,
    Workspace,
    lesser_role,
)

KEY_PREFIX = "trk_"
LAST_USED_EVERY = timedelta(minutes=1)  # how often a key's last-used time is written


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiKey(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=120)
    prefix = models.CharField(max_length=16, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.ADMIN)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Optional limits: only these trackers (none listed: every tracker of the workspace), and only
    # the prediction API (no corpus, game or training calls, no promotion).
    trackers = models.ManyToManyField(Tracker, blank=True, related_name="+")
    predict_only = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(
        cls,
        *,
        workspace: Workspace,
        name: str,
        created_by: Any,
        role: str = Role.ADMIN,
        trackers: list[Tracker] | None = None,
        predict_only: bool = False,
    ) -> tuple[ApiKey, str]:
        """Create a key acting as ``created_by``; the raw secret is returned once and never stored."""
        raw = KEY_PREFIX + secrets.token_urlsafe(32)
        key = cls.objects.create(
            workspace=workspace,
            name=name,
            prefix=raw[:12],
            key_hash=hash_key(raw),
            role=role,
            created_by=created_by,
            predict_only=predict_only,
        )
        if trackers:
            if any(t.workspace_id != workspace.pk for t in trackers):
                raise ValueError("a key can only be limited to trackers of its own workspace")
            key.trackers.set(trackers)
        return key, raw

    @classmethod
    def authenticate(cls, raw: str) -> ApiKey | None:
        """The live key for ``raw`` (see ``lookup``), its last-used time written at most once a minute."""
        key = cls.lookup(raw)
        if key is not None:
            key.touch()
        return key

    @classmethod
    def lookup(cls, raw: str) -> ApiKey | None:
        """The live key for ``raw``: not revoked, and its creator still active and still in the workspace.

        A key acts as its creator (answers are recorded as them), so it stops working the moment
        they are deactivated, deleted or leave the workspace (an install's superusers need no
        membership), and it never does more than their role of now allows (``rights``).
        """
        maker_role = Membership.objects.filter(
            workspace=models.OuterRef("workspace"), user=models.OuterRef("created_by")
        ).values("role")[:1]
        found: ApiKey | None = (
            cls.objects.select_related("workspace", "created_by")
            .annotate(maker_role=models.Subquery(maker_role))
            .filter(key_hash=hash_key(raw), revoked_at__isnull=True, created_by__is_active=True)
            .filter(models.Q(created_by__is_superuser=True) | models.Q(maker_role__isnull=False))
            .first()
        )
        return found

    @property
    def rights(self) -> str:
        """The role the key acts with: the lesser of its own and its maker's role of now (a demoted
        maker's keys are demoted with them; an install's superuser keeps the key's own)."""
        maker = self.created_by
        if maker is not None and maker.is_superuser:
            return self.role
        if "maker_role" in self.__dict__:  # annotated by the query that found the key
            current = self.__dict__["maker_role"]
        else:
            current = (
                Membership.objects.filter(workspace_id=self.workspace_id, user=maker)
                .values_list("role", flat=True)
                .first()
            )
        return lesser_role(self.role, current) if current else Role.VIEWER

    def touch(self) -> None:
        """Record that the key was used: at most one write a minute per key, not one per request (the
        filter keeps concurrent requests of the same minute from writing it again)."""
        now = timezone.now()
        if self.last_used_at is None or now - self.last_used_at >= LAST_USED_EVERY:
            type(self).objects.filter(pk=self.pk).filter(
                models.Q(last_used_at__isnull=True) | models.Q(last_used_at__lte=now - LAST_USED_EVERY)
            ).update(last_used_at=now)
            self.last_used_at = now


class PromotionPolicy(models.Model):
    """How a tracker's new versions go live: by themselves unless clearly worse than the live one
    (``labeling.ml.promotion.goes_live``; the default, when a tracker has no row), or when someone
    promotes them."""

    tracker = models.OneToOneField(
        Tracker, on_delete=models.CASCADE, primary_key=True, related_name="promotion"
    )
    automatic = models.BooleanField(default=True)

    class Meta:
        verbose_name_plural = "promotion policies"

    def __str__(self) -> str:
        return f"{self.tracker}: {'automatic' if self.automatic else 'by hand'}"


class ModelVersion(models.Model):
    """What one successful training run yields: its head as ONNX with a manifest, in a directory of
    its own that is never modified. Exactly one version of a tracker is live (the database holds
    that); predictions use it unless a caller pins another.
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tracker = models.ForeignKey(Tracker, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()  # 1, 2, ... per tracker
    # Its run holds what training knew (featurizer, threshold, metrics, answer counts); runs that
    # yielded a model are never changed either.
    training_run = models.OneToOneField(TrainingRun, on_delete=models.CASCADE, related_name="model_version")
    labels = models.JSONField(default=list)  # output columns, in order
    artifact_dir = models.CharField(max_length=500)  # as the host that wrote it named it: see directory()
    manifest_sha256 = models.CharField(max_length=64)
    is_live = models.BooleanField(default=False)
    went_live_at = models.DateTimeField(null=True, blank=True)
    went_live_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )  # None: promoted by itself
    # The owner's threshold for this version, set on the tracker page while it was live (None: the
    # one training chose for the tracker's target precision). A rollback brings a version's own back.
    threshold_override = models.FloatField(null=True, blank=True)
    threshold_set_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    threshold_set_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["tracker_id", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["tracker", "number"], name="model_version_number_unique"),
            models.UniqueConstraint(
                fields=["tracker"], condition=models.Q(is_live=True), name="one_live_version_per_tracker"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tracker} v{self.number}{' (live)' if self.is_live else ''}"

    def directory(self) -> Path:
        """The version's folder on this host, fetched from the shared bucket if this host lacks it."""
        return bucket.fetched(self.artifact_dir)

    @property
    def kind(self) -> str:
        return self.tracker.kind

    @property
    def threshold(self) -> float | None:
        """Training's own threshold (concepts); the one in use is ``versions.services.threshold_of``."""
        return self.training_run.threshold

    @property
    def quality(self) -> float | None:
        return estimated_quality(self.training_run)

    @property
    def quality_interval(self) -> tuple[float, float] | None:
        """The 95% interval of ``quality``, as training estimated it."""
        ci = _estimate(self.training_run).get("ci")
        return (float(ci[0]), float(ci[1])) if ci else None


def _estimate(run: TrainingRun) -> dict[str, Any]:
    estimates = run.metrics.get("estimates") or {}
    found = estimates.get("accuracy") if run.tracker.kind == TrackerKind.TOPIC else estimates.get("f1")
    return found if isinstance(found, dict) else {}


def estimated_quality(run: TrainingRun) -> float | None:
    """What promotion compares: the estimate over all texts of F1 (concepts) or accuracy (topics)."""
    v = _estimate(run).get("value")
    return float(v) if v is not None else None


class EventType(models.TextChoices):
    MATCH = "tracker.match", "A tracker matched"
    TEST = "webhook.test", "A test"


class EventSource(models.TextChoices):
    """What made an event (and, for ``api``/``bulk``/``import``, which endpoints opted in)."""

    API = "api", "Prediction API"
    BULK = "bulk", "Bulk scoring"
    IMPORT = "import", "Import"
    TEST = "test", "Test"


class ScoringJob(ProgressWork):
    """Bulk scoring of a stored dataset by some live model versions, from the segments' stored vectors.

    The versions are fixed when the job is made (a promotion meanwhile does not change what it
    scores with). Results are the matches (and, for topics, each segment's winning label) at or
    above ``min_score``; ``done_through`` is the last segment id whose results are stored, so a
    worker that takes over a killed one goes on from there.
    """

    task = "serving.tasks.score_dataset"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="scoring_jobs")
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="scoring_jobs")
    versions = models.ManyToManyField(ModelVersion, related_name="scoring_jobs")
    min_score = models.FloatField(null=True, blank=True)  # None: each version's threshold in use
    # bulk: asked for; import: the documents one import brought, scored when they were embedded.
    source = models.CharField(max_length=8, choices=EventSource.choices, default=EventSource.BULK)
    import_job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    done_through = models.BigIntegerField(default=0)
    result = models.JSONField(default=dict, blank=True)  # per tracker: matches, score histogram
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["state", "heartbeat_at"], name="scoring_job_state_heartbeat")]

    def __str__(self) -> str:
        return f"scoring of {self.dataset} ({self.state})"


class Feedback(models.TextChoices):
    RIGHT = "right", "Right"
    WRONG = "wrong", "Wrong"


class ScoredSegment(models.Model):
    """One result of a scoring job: a segment (for document trackers, its document's first line)
    that a version matched, with its score; a reviewer may mark it right or wrong."""

    job = models.ForeignKey(ScoringJob, on_delete=models.CASCADE, related_name="results")
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="+")
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="+")
    score = models.FloatField()
    label = models.CharField(max_length=120)
    match = models.BooleanField()
    feedback = models.CharField(max_length=8, choices=Feedback.choices, blank=True)
    feedback_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-score", "id"]
        constraints = [
            models.UniqueConstraint(fields=["job", "version", "segment"], name="one_result_per_segment")
        ]
        indexes = [models.Index(fields=["job", "version", "score"], name="scored_job_version_score")]

    def __str__(self) -> str:
        return f"{self.version} on {self.segment_id}: {self.score:.3f}"


class Grouping(models.TextChoices):
    TEXT = "text", "One event per matching text"
    DOCUMENT = "document", "One event per document, listing its matching texts"


class WebhookEndpoint(models.Model):
    """Where a tracker's matches are delivered: a URL, its secret (``whsec_``…, shown once) and the
    condition and grouping of its events. An endpoint that fails for too long, or answers 410, is
    disabled, and says why."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tracker = models.ForeignKey(Tracker, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=500, blank=True)
    # Signing secrets; after a rotation the previous one signs too until ``previous_secret_until``.
    secret = models.CharField(max_length=120)
    previous_secret = models.CharField(max_length=120, blank=True)
    previous_secret_until = models.DateTimeField(null=True, blank=True)
    # Condition: the threshold in use, or a stricter score; an optional speaker and metadata filter.
    min_score = models.FloatField(null=True, blank=True)
    speaker_filter = models.CharField(max_length=120, blank=True)
    metadata_filter = models.JSONField(default=dict, blank=True)
    grouping = models.CharField(max_length=16, choices=Grouping.choices, default=Grouping.TEXT)
    # Sources: the prediction API is opt-in (or per request); bulk scoring and imports are on.
    from_api = models.BooleanField(default=False)
    from_bulk = models.BooleanField(default=True)
    from_import = models.BooleanField(default=True)
    failing_since = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.description or self.url


class WebhookEvent(models.Model):
    """One event, as every endpoint it goes to receives it: ``payload`` is the body, byte for byte
    the same on every attempt; ``webhook_id`` (``msg_``…) is the receivers' idempotency key."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tracker = models.ForeignKey(Tracker, on_delete=models.CASCADE, related_name="webhook_events")
    type = models.CharField(max_length=40, choices=EventType.choices)
    source = models.CharField(max_length=8, choices=EventSource.choices)
    payload = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["tracker", "-created_at"], name="webhook_event_tracker_time")]

    def __str__(self) -> str:
        return f"{self.type} {self.webhook_id}"

    @property
    def webhook_id(self) -> str:
        return f"msg_{self.code.hex}"


class WebhookDelivery(ClaimableWork):
    """An event's delivery to one endpoint, tried on a schedule until it succeeds or fails for good.

    ``attempts`` (of the claimable-work base) counts claims of the current try; ``tries`` counts
    HTTP attempts, each a ``DeliveryAttempt`` row. ``dedupe_key`` makes a document (or text) alerted
    once per endpoint and model version, however often its scoring is retried.
    """

    task = "serving.tasks.deliver_webhook"

    # An attempt lasts a few seconds: a worker that died during one is found out within a minute.
    stale_setting = "WEBHOOK_STALE_SECONDS"

    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    dedupe_key = models.CharField(max_length=80, blank=True)  # "": never deduplicated (an API text)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    queued_at = models.DateTimeField(null=True, blank=True)  # when a task was last sent for it
    tries = models.PositiveSmallIntegerField(default=0)
    schedule_from = models.PositiveSmallIntegerField(default=0)  # ``tries`` when last resent
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_status = models.PositiveSmallIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "dedupe_key"],
                condition=~models.Q(dedupe_key=""),
                name="one_delivery_per_alerted_match",
            )
        ]
        indexes = [
            models.Index(fields=["state", "next_attempt_at"], name="delivery_state_due"),
            models.Index(fields=["endpoint", "-created_at"], name="delivery_endpoint_time"),
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} of {self.event_id} to {self.endpoint_id} ({self.state})"


class DeliveryAttempt(models.Model):
    """One HTTP attempt of a delivery: when, what came back (status, an excerpt) or what went wrong."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_rows")
    number = models.PositiveSmallIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.FloatField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_excerpt = models.CharField(max_length=500, blank=True)
    error = models.CharField(max_length=500, blank=True)
    outcome = models.CharField(max_length=16)  # succeeded | retry | failed | disabled

    class Meta:
        ordering = ["delivery_id", "number"]
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="one_attempt_per_number")]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}: {self.outcome}"


class TrafficMinute(models.Model):
    """Texts a tracker scored in one minute (``span_minutes`` 1) or, once older, one hour (60):
    predictions, matches, and prediction latency as counts per bucket of ``serving.traffic``'s
    scale. Written by ``serving.traffic.store`` only."""

    tracker = models.ForeignKey(Tracker, on_delete=models.CASCADE, related_name="traffic")
    start = models.DateTimeField()
    span_minutes = models.PositiveSmallIntegerField(default=1)
    predictions = models.BigIntegerField(default=0)
    matches = models.BigIntegerField(default=0)
    latency = models.JSONField(default=dict, blank=True)  # {bucket: count}

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tracker", "start", "span_minutes"], name="one_traffic_row_per_period"
            )
        ]
        indexes = [models.Index(fields=["start"], name="traffic_start")]
        verbose_name = "traffic minute"

    def __str__(self) -> str:
        return f"{self.tracker} {self.start:%Y-%m-%d %H:%M} +{self.span_minutes}m: {self.predictions}"


class KeepMode(models.TextChoices):
    OFF = "off", "Keep nothing"
    ALL = "all", "Keep every text"
    SAMPLE = "sample", "Keep a sample"


class LiveKeeping(models.Model):
    """What a tracker keeps of the texts its live versions score (nothing, unless its owner says)."""

    tracker = models.OneToOneField(
        Tracker, on_delete=models.CASCADE, primary_key=True, related_name="live_keeping"
    )
    mode = models.CharField(max_length=8, choices=KeepMode.choices, default=KeepMode.OFF)
    per_day = models.PositiveIntegerField(default=1000)  # SAMPLE: at most this many a day
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    changed_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.tracker}: {self.get_mode_display().lower()}"


class LiveText(models.Model):
    """A text a live version scored, kept for ``LIVE_RETENTION_DAYS`` (``serving.live``), with the
    chance it had of being kept (1 when every text is kept), so that a review of them can count."""

    tracker = models.ForeignKey(Tracker, on_delete=models.CASCADE, related_name="live_texts")
    version = models.ForeignKey(ModelVersion, null=True, on_delete=models.SET_NULL, related_name="+")
    text = models.TextField()
    text_hash = models.CharField(max_length=64, db_index=True)
    score = models.FloatField()
    label = models.CharField(max_length=120, blank=True)
    matched = models.BooleanField()
    source = models.CharField(max_length=16)  # api, bulk, import
    probability = models.FloatField(default=1.0)
    created_at = models.DateTimeField(default=timezone.now)
    # The text's vector as the prediction computed it (float32 bytes of ``encoder_id``), until the
    # text joins the tracker's "live traffic" dataset as ``segment`` (``serving.live.gather``).
    vector = models.BinaryField(null=True, blank=True)
    encoder_id = models.CharField(max_length=120, blank=True)
    segment = models.ForeignKey(Segment, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        indexes = [models.Index(fields=["tracker", "created_at"], name="live_text_tracker_time")]

    def __str__(self) -> str:
        return f"{self.tracker}: {self.text[:60]}"


class LiveFeedback(models.Model):
    """Right or wrong, said about a live decision from where it landed: an alert's event
    (``webhook-id``) or one text of a prediction response (its ``id``). It is also the caller's
    answer for the tracker (``segment``), so the next version learns from it."""

    tracker = models.ForeignKey(Tracker, on_delete=models.CASCADE, related_name="live_feedback")
    version = models.ForeignKey(ModelVersion, null=True, on_delete=models.SET_NULL, related_name="+")
    event = models.ForeignKey(
        "WebhookEvent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    prediction_id = models.CharField(max_length=200, blank=True)
    segment = models.ForeignKey(Segment, null=True, on_delete=models.SET_NULL, related_name="+")
    text = models.TextField()
    score = models.FloatField(null=True, blank=True)
    matched = models.BooleanField()
    verdict = models.CharField(max_length=8, choices=Feedback.choices)
    answer = models.CharField(max_length=120)
    given_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    via = models.CharField(max_length=40, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["tracker", "-created_at"], name="live_feedback_tracker_time")]

    def __str__(self) -> str:
        return f"{self.verdict} on {self.text[:60]}"
