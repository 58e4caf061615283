"""Serving tasks: a finished training run becomes a model version; a dataset is scored in bulk;
webhook deliveries are attempted (on a queue of their own) and dispatched when due."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from labeling.models import TrainingRun
from serving import traffic
from serving.live import services as live
from serving.models import ScoringJob, WebhookDelivery
from serving.scoring import services as scoring
from serving.versions import services
from serving.webhooks import sending
from trackers import work


@shared_task(acks_late=True)
def publish_version(*, training_run_id: int) -> int | None:
    """Write the run's model version (once: a redelivery finds it written) and maybe promote it."""
    run = TrainingRun.objects.filter(pk=training_run_id).first()
    version = services.publish_version(run) if run is not None else None
    return version.pk if version else None


@shared_task
def publish_missing_versions() -> list[int]:
    """Periodic: runs whose version task was lost are published."""
    return services.publish_missing()


@shared_task(bind=True, acks_late=True)
def score_dataset(self: Task, *, work_id: int) -> None:
    """Score a stored dataset with the job's versions (claimed once; a takeover goes on from the checkpoint)."""
    work.run_claimed(self, ScoringJob, work_id, scoring.run_scoring)


@shared_task
def sweep_stale_scoring() -> dict[str, Any]:
    """Periodic: scoring jobs whose worker died or whose message was lost are queued again."""
    return scoring.requeue_stale()


@shared_task
def sweep_live_texts() -> int:
    """Periodic: kept live texts older than LIVE_RETENTION_DAYS are deleted."""
    return live.sweep_expired()


@shared_task
def gather_live_texts() -> int:
    """Periodic: kept live texts join their tracker's "live traffic" dataset, with their vectors."""
    return live.gather_all()


@shared_task
def store_traffic() -> int:
    """Periodic: the closed minutes' traffic counts move from Redis into the database (the console's)."""
    return traffic.store()


@shared_task(bind=True, acks_late=True)
def deliver_webhook(self: Task, *, work_id: int) -> None:
    """One attempt of a webhook delivery once it is due (claimed once; a retry is scheduled, not looped)."""
    work.run_claimed(self, WebhookDelivery, work_id, sending.attempt, ready=sending.due())


@shared_task
def dispatch_webhooks() -> dict[str, Any]:
    """Periodic: deliveries that came due or whose task was lost are sent; dead workers' taken over."""
    return sending.dispatch()
