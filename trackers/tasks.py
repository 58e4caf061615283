"""Celery tasks for the corpus: job ids in, run through the one claimable-work machinery."""

from __future__ import annotations

from celery import shared_task

from trackers import embedding, imports, search, services, work
from trackers.models import EmbedPart, Job


@shared_task(bind=True, acks_late=True)
def import_corpus(self, *, work_id: int) -> None:
    """Parse an uploaded file into documents and segments; queue embedding on success."""

    def run(job: Job) -> None:
        imports.run_import(job)  # records its own outcome on the job

    work.run_claimed(self, Job, work_id, run)


@shared_task(bind=True, acks_late=True)
def embed_dataset(self, *, work_id: int) -> None:
    """Split embedding the dataset's new segments into parts; the last part to end queues the index."""
    work.run_claimed(self, Job, work_id, embedding.plan_embedding)


@shared_task(bind=True, acks_late=True)
def embed_part(self, *, work_id: int) -> None:
    """Embed one part of a dataset's new segments (any bulk worker; taken over if its worker dies)."""
    work.run_claimed(self, EmbedPart, work_id, embedding.embed_part)


@shared_task(bind=True, acks_late=True)
def build_index(self, *, work_id: int) -> None:
    """Rebuild a dataset's FAISS index beside the live one and swap it in."""
    work.run_claimed(self, Job, work_id, lambda job: {"message": search.rebuild_index(job)})


@shared_task
def sweep_stale_jobs() -> dict:
    """Periodic: jobs whose worker died or whose message was lost are queued again (or fail, out of attempts)."""
    return services.requeue_stale_jobs()
