"""The API's paginated lists: limit and offset, each with an upper bound, so that a request asking for
an absurd page gets a 422 naming the field and its limit, not a database error."""

from __future__ import annotations

from typing import Any

from ninja import Field
from ninja.pagination import LimitOffsetPagination

MAX_LIMIT = 1_000  # items of one page
MAX_OFFSET = 10_000_000  # past any list this app keeps


class Pages(LimitOffsetPagination):
    class Input(LimitOffsetPagination.Input):
        limit: int = Field(100, ge=1, le=MAX_LIMIT, description=f"items of the page, at most {MAX_LIMIT:,}")
        offset: int = Field(0, ge=0, le=MAX_OFFSET, description="items to skip")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_limit=MAX_LIMIT, **kwargs)
