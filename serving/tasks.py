"""Training tasks: run ids in, claimed by compare-and-set, reruns harmless."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from serving import services
from serving.models import TrainingRun, TrainingState

log = logging.getLogger(__name__)


@shared_task(bind=True, acks_late=True)
def train_tracker(self, *, training_run_id: int) -> None:
    """Train a tracker's head for one label watermark."""
    run = services.claim_run(training_run_id)
    if run is None:
        state = TrainingRun.objects.filter(pk=training_run_id).values_list("state", flat=True).first()
        if state == TrainingState.RUNNING and not (self.request.is_eager or self.request.called_directly):
            raise self.retry(countdown=settings.JOB_STALE_SECONDS + 1, max_retries=None)
        return
    try:
        services.run_training(run)
    except Exception as exc:
        log.exception("training run %s failed", training_run_id)
        run.refresh_from_db()
        services.finish_run(run, TrainingState.FAILED, error=f"{type(exc).__name__}: {exc}")
