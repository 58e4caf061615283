"""Workspaces, memberships, the corpus (datasets, documents, segments) and background jobs."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Self

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

if TYPE_CHECKING:
    from django.contrib.auth.models import User


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    LABELER = "labeler", "Labeler"
    VIEWER = "viewer", "Viewer"


# What each role may do; higher roles include the lower ones.
CAN_IMPORT = {Role.OWNER, Role.ADMIN}
CAN_LABEL = {Role.OWNER, Role.ADMIN, Role.LABELER}
ROLE_RANK = {Role.VIEWER: 0, Role.LABELER: 1, Role.ADMIN: 2, Role.OWNER: 3}


def lesser_role(*roles: str) -> str:
    """The lowest of ``roles``: what a caller whose rights come from several places may do."""
    return min(roles, key=lambda role: ROLE_RANK[Role(role)])


def role_at_most(role: str, limit: str) -> bool:
    return ROLE_RANK[Role(role)] <= ROLE_RANK[Role(limit)]


class Workspace(models.Model):
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=120)
    created_at = models.DateTimeField(default=timezone.now)
    members: models.ManyToManyField[User, Membership] = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="workspaces"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "user"], name="one_membership_per_user")]

    def __str__(self) -> str:
        return f"{self.user} in {self.workspace} ({self.role})"


class Dataset(models.Model):
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # The encoder that made every stored vector of this dataset; fixed at the first embedding.
    encoder_id = models.CharField(max_length=120, blank=True)
    vector_count = models.PositiveIntegerField(default=0)
    index_file = models.CharField(max_length=255, blank=True)
    index_kind = models.CharField(max_length=16, blank=True)
    index_size = models.PositiveIntegerField(default=0)
    index_built_at = models.DateTimeField(null=True, blank=True)
    # "live": the texts a live tracker scored and kept (``serving.live``), a population of its own
    # in the quality estimates; "": texts a person imported.
    origin = models.CharField(max_length=8, blank=True, default="")

    LIVE = "live"
    INDEX_NAMES: ClassVar[dict[str, str]] = {
        "flat": "exact",
        "hnsw": "approximate (HNSW graph)",
        "ivf": "approximate (IVF clusters)",
    }

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name"], name="dataset_name_unique_in_workspace")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def index_name(self) -> str:
        """How its search index finds neighbours, in words ("exact", "approximate (HNSW graph)")."""
        return self.INDEX_NAMES.get(self.index_kind, self.index_kind)


class DocumentKind(models.TextChoices):
    CALL = "call", "Call"
    EMAIL = "email", "Email"
    CHAT = "chat", "Chat"
    MESSAGE = "message", "Message"


class Document(models.Model):
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="documents")
    external_id = models.CharField(max_length=255, blank=True)
    title = models.CharField(max_length=255, blank=True)
    kind = models.CharField(max_length=16, default=DocumentKind.MESSAGE)
    metadata = models.JSONField(default=dict, blank=True)
    occurred_at = models.DateTimeField(null=True, blank=True)
    imported_by_job = models.ForeignKey(
        "Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["dataset", "external_id"],
                condition=~Q(external_id=""),
                name="document_external_id_unique",
            )
        ]

    def __str__(self) -> str:
        return self.title or self.external_id or str(self.code)


class Segment(models.Model):
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="segments")
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="segments")
    position = models.PositiveIntegerField()
    speaker = models.CharField(max_length=120, blank=True)
    text = models.TextField()
    text_hash = models.CharField(max_length=40)  # sha1 of the text: duplicates are embedded once
    start_time = models.FloatField(null=True, blank=True)
    end_time = models.FloatField(null=True, blank=True)
    known_label = models.CharField(max_length=120, blank=True)
    # Row of this text's vector in the dataset's vector store; shared by identical texts.
    vector_row = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["document_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["document", "position"], name="segment_position_unique")
        ]
        indexes = [
            models.Index(fields=["dataset", "text_hash"], name="segment_dataset_hash"),
            models.Index(fields=["dataset", "vector_row"], name="segment_dataset_row"),
        ]

    def __str__(self) -> str:
        return self.text[:60]


class WorkState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


JobState = WorkState


class ClaimableWork(models.Model):
    """Background work that one worker at a time claims by compare-and-set (see ``trackers.work``).

    ``attempts`` counts claims: a worker that dies holding the work leaves it running with a stale
    heartbeat, the next claim takes it over, and past ``TRACKERS_WORK_MAX_ATTEMPTS`` it fails.
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    state = models.CharField(max_length=16, choices=WorkState.choices, default=WorkState.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    # Declared for the type checker: every concrete subclass gets Django's default manager.
    objects: ClassVar[models.Manager[Self]]
    # The setting that says how long a claim may go without a heartbeat before the work counts as
    # abandoned (its worker died) and is taken over.
    stale_setting: ClassVar[str] = "JOB_STALE_SECONDS"
    # The Celery task that runs this work, by name; it receives the row's pk as ``work_id``.
    task: ClassVar[str] = ""

    class Meta:
        abstract = True

    def task_name(self) -> str:
        return self.task

    @classmethod
    def stale_seconds(cls) -> int:
        return int(getattr(settings, cls.stale_setting))

    @property
    def is_done(self) -> bool:
        return self.state not in (WorkState.QUEUED, WorkState.RUNNING)

    def failure_fields(self, reason: str) -> dict:
        """The fields that record a failure; subclasses add their own (a job's message)."""
        return {"error": reason}

    def why_not_retried(self) -> str | None:
        """Why this work, failed, cannot simply run again (None: it can)."""
        return None


class ProgressWork(ClaimableWork):
    """Claimable work with visible progress: ``processed`` of ``total`` and a message for people."""

    processed = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    message = models.CharField(max_length=500, blank=True)

    class Meta:
        abstract = True

    def failure_fields(self, reason: str) -> dict:
        return {"error": reason, "message": reason[:500]}

    @property
    def percent(self) -> int:
        if self.state == WorkState.SUCCEEDED:
            return 100
        if not self.total:
            return 0
        return min(100, int(100 * self.processed / self.total))


class JobKind(models.TextChoices):
    IMPORT = "import", "Import"
    EMBED = "embed", "Embed"
    INDEX = "index", "Build index"


class Job(ProgressWork):
    """A unit of corpus work (import, embedding, index) with visible progress."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="jobs")
    dataset = models.ForeignKey(Dataset, null=True, blank=True, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=16, choices=JobKind.choices)
    params = models.JSONField(default=dict, blank=True)
    errors = models.JSONField(default=list, blank=True)
    result = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["state", "heartbeat_at"], name="job_state_heartbeat")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.code} ({self.state})"

    def why_not_retried(self) -> str | None:
        # An import's uploaded file is removed when the import ends: the file is imported again.
        path = (self.params or {}).get("path")
        if self.kind == JobKind.IMPORT and not (path and Path(str(path)).exists()):
            return "the uploaded file is removed once an import ends: import the file again"
        return None

    def task_name(self) -> str:
        return {
            JobKind.IMPORT: "trackers.tasks.import_corpus",
            JobKind.EMBED: "trackers.tasks.embed_dataset",
            JobKind.INDEX: "trackers.tasks.build_index",
        }[JobKind(self.kind)]


class EmbedPart(ClaimableWork):
    """One slice of an embedding job (segments ``first_segment``..``last_segment`` of its dataset),
    a task of its own: any bulk worker takes it, and one that dies leaves it to be taken over.

    The job stays running while its parts are queued or running; the part that ends last ends it.
    """

    task = "trackers.tasks.embed_part"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="parts")
    number = models.PositiveIntegerField()  # 1, 2, ... in segment order
    first_segment = models.BigIntegerField()
    last_segment = models.BigIntegerField()
    segments = models.PositiveIntegerField()  # segments without a vector when planned
    processed = models.PositiveIntegerField(default=0)
    stored = models.PositiveIntegerField(default=0)  # vectors this part added to the store

    class Meta:
        ordering = ["job_id", "number"]
        constraints = [models.UniqueConstraint(fields=["job", "number"], name="embed_part_number_unique")]
        indexes = [models.Index(fields=["state", "heartbeat_at"], name="embed_part_state_heartbeat")]

    def __str__(self) -> str:
        return f"part {self.number} of {self.job}"


class TrackerKind(models.TextChoices):
    CONCEPT = "concept", "Concept (yes / no)"
    TOPIC = "topic", "Topic (one of several labels)"


class Granularity(models.TextChoices):
    SEGMENT = "segment", "Segment (utterance or sentence)"
    DOCUMENT = "document", "Document (whole call, email or chat)"


class TrackerState(models.TextChoices):
    DRAFT = "draft", "Draft"
    LABELING = "labeling", "Labeling"
    READY = "ready", "Ready"
    LIVE = "live", "Live"


class Tracker(models.Model):
    """A classifier a workspace trains by example: a concept (yes/no) or a topic (one of N labels)."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="trackers")
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=16, choices=TrackerKind.choices, default=TrackerKind.CONCEPT)
    granularity = models.CharField(max_length=16, choices=Granularity.choices, default=Granularity.SEGMENT)
    labels = models.JSONField(default=list, blank=True)  # topic label names, in order
    datasets = models.ManyToManyField(Dataset, related_name="trackers")
    speaker_filter = models.CharField(max_length=120, blank=True)
    metadata_filter = models.JSONField(default=dict, blank=True)
    keywords = models.JSONField(default=list, blank=True)
    target_precision = models.FloatField(default=0.8)
    round_size = models.PositiveSmallIntegerField(default=25)
    state = models.CharField(max_length=16, choices=TrackerState.choices, default=TrackerState.DRAFT)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)
    last_trained_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name"], name="tracker_name_unique_in_workspace")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def answers(self) -> list[str]:
        """The answers a labeler can give, besides skip: yes/no, or each topic label and "none"."""
        return ["yes", "no"] if self.kind == TrackerKind.CONCEPT else [*self.labels, "none"]


class SeedExample(models.Model):
    """An example sentence given when creating a tracker (typed, or picked from search)."""

    tracker = models.ForeignKey(Tracker, on_delete=models.CASCADE, related_name="seeds")
    text = models.TextField()
    label = models.CharField(max_length=120, default="yes")
    segment = models.ForeignKey(Segment, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.text[:60]


class AccessGeneration(models.Model):
    """A counter that moves whenever something that answering a request depends on changes (keys,
    memberships, workspaces, trackers, datasets, model versions: in its workspace; users: the global
    one): a process may keep what it looked up for as long as it has not moved (``trackers.generation``)."""

    scope = models.BigIntegerField(unique=True, default=0)  # 0: every workspace's; else a workspace's pk
    value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"access generation {self.value} of {self.scope or 'every workspace'}"


INVITATION_DAYS = 7


class Invitation(models.Model):
    """A one-time link that makes whoever opens it first a member with ``role``; the link's secret is
    kept only as its hash, and it stops working once used, revoked or ``INVITATION_DAYS`` old."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="invitations")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.LABELER)
    email = models.EmailField(blank=True)  # where the link was sent, if it was
    token_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"invitation to {self.workspace} as {self.role}"

    @property
    def state(self) -> str:
        if self.accepted_at is not None:
            return "accepted"
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        return "open"


class AuditAction(models.TextChoices):
    WORKSPACE_CREATED = "workspace.created", "workspace created"
    WORKSPACE_DELETED = "workspace.deleted", "workspace deleted"
    MEMBER_INVITED = "member.invited", "member invited"
    INVITATION_REVOKED = "invitation.revoked", "invitation revoked"
    MEMBER_JOINED = "member.joined", "member joined"
    MEMBER_ROLE_CHANGED = "member.role_changed", "member's role changed"
    MEMBER_REMOVED = "member.removed", "member removed"
    DATASET_CREATED = "dataset.created", "dataset created"
    DATASET_IMPORTED = "dataset.imported", "file imported"
    DATASET_DELETED = "dataset.deleted", "dataset deleted"
    TRACKER_CREATED = "tracker.created", "tracker created"
    TRACKER_CHANGED = "tracker.changed", "tracker changed"
    TRACKER_DELETED = "tracker.deleted", "tracker deleted"
    THRESHOLD_MOVED = "threshold.moved", "threshold moved"
    VERSION_PROMOTED = "version.promoted", "version promoted"
    VERSION_ROLLED_BACK = "version.rolled_back", "version rolled back"
    KEY_CREATED = "key.created", "API key made"
    KEY_REVOKED = "key.revoked", "API key revoked"
    ENDPOINT_CREATED = "endpoint.created", "alert endpoint added"
    ENDPOINT_CHANGED = "endpoint.changed", "alert endpoint changed"
    ENDPOINT_DELETED = "endpoint.deleted", "alert endpoint deleted"
    SECRET_ROTATED = "endpoint.secret_rotated", "signing secret rotated"
    JOB_RETRIED = "job.retried", "job retried"


class AuditQuerySet(models.QuerySet["AuditEntry"]):
    def update(self, **kwargs: object) -> int:
        raise TypeError("audit entries are never edited")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise TypeError("audit entries are never deleted")


class AuditEntry(models.Model):
    """One thing someone did (``trackers.audit.record``). Entries are written once and never edited:
    the model refuses a second save, its queryset refuses updates and deletes, and the database
    refuses an UPDATE (a trigger, migration 0011). Who and where are kept as they were (names, not
    only ids) and point at no row, so deleting a user or a workspace leaves its history whole."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    workspace_id = models.BigIntegerField(null=True, db_index=True)  # of a workspace perhaps deleted since
    workspace_name = models.CharField(max_length=120, blank=True)
    actor_id = models.BigIntegerField(null=True, db_index=True)  # the user; None: the system
    actor_name = models.CharField(max_length=150, blank=True)
    via = models.CharField(max_length=40, blank=True)  # "page", "API", "API key abc123", "worker"
    action = models.CharField(max_length=40, choices=AuditAction.choices, db_index=True)
    target = models.CharField(max_length=200, blank=True)  # what it was done to, in words
    target_code = models.CharField(max_length=64, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=64, blank=True)

    objects: ClassVar[AuditQuerySet] = AuditQuerySet.as_manager()  # type: ignore[assignment]

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_name or 'system'}: {self.action} {self.target}"

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None:
            raise TypeError("audit entries are never edited")
        super().save(*args, **kwargs)

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise TypeError("audit entries are never deleted")
