"""Celery application: its broker is Redis, the embedded one of `make run` or REDIS_URL's."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import celeryd_after_setup

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("trackers")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@celeryd_after_setup.connect
def bulk_worker_yields(sender: str, instance: object, **kwargs: object) -> None:
    """A worker that takes only bulk work (imports, embedding, index builds) runs at a lower CPU
    priority and with fewer encoder threads, so training on the same machine does not wait for it.
    Its pool's processes start after this and inherit both."""
    queues = set(app.amqp.queues.consume_from or ())
    if queues != {"bulk"}:
        return
    from django.conf import settings

    from trackers import encoders

    os.nice(settings.BULK_WORKER_NICENESS)
    encoders.limit_threads(settings.BULK_ENCODER_THREADS)
