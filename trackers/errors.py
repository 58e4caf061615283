"""The one error a service raises when it refuses something, saying why.

It carries the ``field`` that was wrong (empty when it is not one field) and a ``code`` for the kind
of refusal. Each API maps the code to a status in one place (``config.api``); a page puts the
message under the form's field. Every layer's refusals are subclasses, so a caller that only needs
to know "refused, and why" catches ``Refused``.
"""

from __future__ import annotations

from typing import ClassVar

INVALID = "invalid"  # what was given cannot be used (422)
CONFLICT = "conflict"  # it cannot be done in the state things are in now (409)
FORBIDDEN = "forbidden"  # the caller may not do it (403)
NOT_FOUND = "not_found"  # what it names does not exist, or the caller may not see it (404)

STATUS = {INVALID: 422, CONFLICT: 409, FORBIDDEN: 403, NOT_FOUND: 404}


class Refused(Exception):
    code: ClassVar[str] = INVALID

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message

    @property
    def status(self) -> int:
        return STATUS[self.code]


class Invalid(Refused):
    code = INVALID


class Conflict(Refused):
    code = CONFLICT


class Forbidden(Refused):
    code = FORBIDDEN


class NotFound(Refused):
    code = NOT_FOUND
