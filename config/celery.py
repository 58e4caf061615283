"""Celery application: its broker is Redis, the embedded one of `make run` or REDIS_URL's."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import celeryd_after_setup, task_postrun, task_prerun, worker_ready

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


_acting: dict[str, object] = {}  # task id -> the context manager it runs inside


@task_prerun.connect
def act_for_the_request(task_id: str, task: object, **kwargs: object) -> None:
    """A task runs for the request that queued it: its log lines and audit entries carry its id."""
    from trackers import context
    from trackers.work import REQUEST_ID_HEADER

    request = getattr(task, "request", None)
    rid = getattr(request, REQUEST_ID_HEADER, None) or (getattr(request, "headers", None) or {}).get(
        REQUEST_ID_HEADER
    )
    manager = context.acting(context.Caller(str(rid or f"task-{task_id}")))
    manager.__enter__()
    _acting[task_id] = manager


@task_postrun.connect
def done_acting(task_id: str, **kwargs: object) -> None:
    manager = _acting.pop(task_id, None)
    if manager is not None:
        manager.__exit__(None, None, None)  # type: ignore[attr-defined]


@worker_ready.connect
def say_alive(sender: object, **kwargs: object) -> None:
    """A worker tells the console it is alive, every ``trackers.health.WORKER_BEAT_S`` seconds, from a
    thread of its main process."""
    import threading
    import time

    from trackers import health

    hostname = str(getattr(sender, "hostname", "worker"))
    queues = (
        sorted(q.name for q in app.amqp.queues.consume_from.values()) if app.amqp.queues.consume_from else []
    )
    started = time.time()

    def beat() -> None:
        while True:
            try:
                health.worker_beat(hostname, queues, os.getpid(), started)
            except Exception as exc:  # Redis away for a while: the console shows the worker as silent
                import logging

                logging.getLogger(__name__).warning("heartbeat not written: %s", exc)
            time.sleep(health.WORKER_BEAT_S)

    threading.Thread(target=beat, name="worker-heartbeat", daemon=True).start()
