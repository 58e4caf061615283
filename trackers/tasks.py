"""Celery tasks for the corpus: job ids in, run through the one claimable-work machinery."""

from __future__ import annotations

from celery import shared_task

from trackers import search, services, work
from trackers.models import Job, JobKind


@shared_task(bind=True, acks_late=True)
def import_corpus(self, *, job_id: int) -> None:
    """Parse an uploaded file into documents and segments; queue embedding on success."""

    def run(job: Job) -> None:
        services.run_import(job)  # records its own outcome on the job

    work.run_claimed(self, Job, job_id, run)


@shared_task(bind=True, acks_late=True)
def embed_dataset(self, *, job_id: int) -> None:
    """Embed the dataset's new segments; queue an index rebuild afterwards."""

    def embed(job: Job) -> dict:
        n = services.embed_pending(job)
        assert job.dataset is not None, "embedding jobs belong to a dataset"
        services.create_job(
            dataset=job.dataset, kind=JobKind.INDEX, user=job.created_by, params={"after": str(job.code)}
        )
        return {"message": f"embedded {n:,} distinct texts"}

    work.run_claimed(self, Job, job_id, embed)


@shared_task(bind=True, acks_late=True)
def build_index(self, *, job_id: int) -> None:
    """Rebuild a dataset's FAISS index beside the live one and swap it in."""
    work.run_claimed(self, Job, job_id, lambda job: {"message": search.rebuild_index(job)})


@shared_task
def sweep_stale_jobs() -> dict:
    """Periodic: jobs whose worker died or whose message was lost are queued again (or fail, out of attempts)."""
    return services.requeue_stale_jobs()
