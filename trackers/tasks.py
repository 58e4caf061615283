"""Celery tasks for the corpus: ids in, state re-read, work claimed by compare-and-set."""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import shared_task

from trackers import services
from trackers.models import Job, JobKind, JobState

log = logging.getLogger(__name__)


def run_claimed(job_id: int, work: Callable[[Job], str | None]) -> None:
    """Claim the job, run ``work``, and record failure with its reason; reruns of done jobs do nothing."""
    job = services.claim_job(job_id)
    if job is None:
        log.info("job %s is not claimable (done or taken); nothing to do", job_id)
        return
    try:
        message = work(job)
    except Exception as exc:
        log.exception("job %s failed", job_id)
        job.refresh_from_db()
        services.finish_job(job, state=JobState.FAILED, message=f"{type(exc).__name__}: {exc}")
        return
    job.refresh_from_db(fields=["state"])
    if job.state == JobState.RUNNING:
        services.finish_job(job, state=JobState.SUCCEEDED, message=message or "done")


@shared_task(acks_late=True)
def import_corpus(*, job_id: int) -> None:
    """Parse an uploaded file into documents and segments; queue embedding on success."""
    run_claimed(job_id, lambda job: services.run_import(job) and None)


@shared_task(acks_late=True)
def embed_dataset(*, job_id: int) -> None:
    """Embed the dataset's new segments; queue an index rebuild afterwards."""

    def work(job: Job) -> str:
        n = services.embed_pending(job)
        services.create_job(dataset=job.dataset, kind=JobKind.INDEX, user=job.created_by,
                            params={"after": str(job.code)})
        return f"embedded {n:,} distinct texts"

    run_claimed(job_id, work)


@shared_task
def requeue_stale_jobs() -> list[int]:
    """Periodic sweeper for jobs whose worker died."""
    return services.requeue_stale_jobs()
