"""Who the current code acts for: the request being answered, or the request that enqueued the task
being run. A context variable, set by ``trackers.http.RequestContext`` and by the task runner
(``config.celery``); read by the audit log and the log lines. No Django import: the logging filters
read it while settings load."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Caller:
    """``request``: the request being answered (None in a task); resolved lazily, since the API's
    authentication sets ``request.auth`` after the middleware ran."""

    request_id: str
    request: Any = None


_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("trackers_caller", default=None)


@contextlib.contextmanager
def acting(caller: Caller) -> Iterator[Caller]:
    """Everything done inside is done for ``caller``."""
    token = _caller.set(caller)
    try:
        yield caller
    finally:
        _caller.reset(token)


def current() -> Caller | None:
    return _caller.get()


def request_id() -> str:
    """The id of the request being answered (or that enqueued the task being run); "" outside one."""
    caller = _caller.get()
    return caller.request_id if caller is not None else ""
