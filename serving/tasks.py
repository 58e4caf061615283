"""Serving tasks: a finished training run becomes a model version."""

from __future__ import annotations

from celery import shared_task

from labeling.models import TrainingRun
from serving import services


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
