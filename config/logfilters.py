"""Filters of the app's log (settings.LOGGING); imported while settings are read, so nothing here
imports Django's models or the apps."""

from __future__ import annotations

import logging

from trackers.context import request_id  # no Django import there: safe while settings load


class OneLineRefusals(logging.Filter):
    """Django logs a refused request (403) with the traceback of its PermissionDenied; keep the one
    line that says which path was refused."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "status_code", None) == 403:
            record.exc_info = None
            record.exc_text = None
        return True


class RequestId(logging.Filter):
    """Give every line the id of the request (or of the request that enqueued the task) it was
    written in, "" outside one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id()
        return True


class QuietPeriodic(logging.Filter):
    """The beat's periodic tasks (sweepers, the webhook dispatcher every few seconds) say nothing at
    INFO: Celery's "sending due task", "received" and "succeeded" lines about them would be most of
    the log. Their warnings and failures still show."""

    LOGGERS = ("celery.beat", "celery.app.trace", "celery.worker.strategy", "celery.worker.request")

    def __init__(self, tasks: list[str] | None = None) -> None:
        super().__init__()
        self.tasks = tuple(tasks or ())

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO or not record.name.startswith(self.LOGGERS):
            return True
        message = record.getMessage()
        return not any(task in message for task in self.tasks)
