"""What text the app can store: no NUL characters, no lone UTF-16 surrogates. Pure Python.

PostgreSQL refuses both (a NUL byte in text or JSON, a surrogate that is not UTF-8), and SQLite
stores them only to hand back what no page can show. Every way in — forms, API schemas, imports,
services — asks ``problem`` first, so that a bad character is a clear error naming its field.
"""

from __future__ import annotations

import re

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def problem(text: str) -> str | None:
    """Why ``text`` cannot be stored, in words, or None when it can."""
    bad = _UNSTORABLE.search(text)
    if bad is None:
        return None
    at = bad.start() + 1
    if bad.group() == "\x00":
        return f"contains a NUL character (\\u0000) at character {at:,}"
    return f"contains a lone surrogate (U+{ord(bad.group()):04X}) at character {at:,}, which is not text"


def storable(value: str) -> str:
    """``value`` unchanged, or ValueError saying what is wrong (a pydantic validator)."""
    why = problem(value)
    if why:
        raise ValueError(why)
    return value
