"""Celery tasks for the corpus: ids in, state re-read, work claimed by compare-and-set."""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import shared_task
from django.conf import settings

from trackers import services
from trackers.models import Job, JobKind, JobState

log = logging.getLogger(__name__)


def run_claimed(task, job_id: int, work: Callable[[Job], str | None]) -> None:
    """Claim the job, run ``work``, and record failure with its reason; reruns of done jobs do nothing."""
    job = services.claim_job(job_id)
    if job is None:
        state = Job.objects.filter(pk=job_id).values_list("state", flat=True).first()
        if state == JobState.RUNNING and not (task.request.is_eager or task.request.called_directly):
            # Either another worker is on it, or one died holding it (a redelivery after a
            # kill arrives before its heartbeat goes stale): look again once it could be stale.
            raise task.retry(countdown=settings.JOB_STALE_SECONDS + 1, max_retries=None)
        log.info("job %s is %s; nothing to do", job_id, state or "gone")
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


@shared_task(bind=True, acks_late=True)
def import_corpus(self, *, job_id: int) -> None:
    """Parse an uploaded file into documents and segments; queue embedding on success."""
    run_claimed(self, job_id, lambda job: services.run_import(job) and None)


@shared_task(bind=True, acks_late=True)
def embed_dataset(self, *, job_id: int) -> None:
    """Embed the dataset's new segments; queue an index rebuild afterwards."""

    def work(job: Job) -> str:
        n = services.embed_pending(job)
        services.create_job(
            dataset=job.dataset, kind=JobKind.INDEX, user=job.created_by, params={"after": str(job.code)}
        )
        return f"embedded {n:,} distinct texts"

    run_claimed(self, job_id, work)


@shared_task
def requeue_stale_jobs() -> dict:
    """Periodic sweeper for jobs and training runs whose worker died or whose message was lost."""
    from serving.services import requeue_stale_runs

    return {"jobs": services.requeue_stale_jobs(), "training_runs": requeue_stale_runs()}
