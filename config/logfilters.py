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
