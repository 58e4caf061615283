"""Filters of the app's log (settings.LOGGING); imported while settings are read, so nothing here
imports Django's models or the apps."""

from __future__ import annotations

import logging


class OneLineRefusals(logging.Filter):
    """Django logs a refused request (403) with the traceback of its PermissionDenied; keep the one
    line that says which path was refused."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "status_code", None) == 403:
            record.exc_info = None
            record.exc_text = None
        return True
