"""Training tasks: run ids in, run through the one claimable-work machinery, reruns harmless."""

from __future__ import annotations

from celery import shared_task

from labeling import services
from labeling.models import TrainingRun
from trackers import work


@shared_task(bind=True, acks_late=True)
def train_tracker(self, *, work_id: int) -> None:
    """Train a tracker's head on the answers of one watermark, then queue its next round."""
    work.run_claimed(self, TrainingRun, work_id, services.run_training)


@shared_task
def sweep_stale_runs() -> dict:
    """Periodic: training runs whose worker died or whose message was lost are sent again."""
    return services.requeue_stale_runs()
