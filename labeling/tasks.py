"""Celery tasks for the similarity index."""

from __future__ import annotations

from celery import shared_task

from labeling import services
from trackers.tasks import run_claimed


@shared_task(bind=True, acks_late=True)
def build_index(self, *, job_id: int) -> None:
    """Rebuild a dataset's FAISS index beside the live one and swap it in."""
    run_claimed(self, job_id, services.rebuild_index)
