"""What text the app can store: no NUL characters, no lone UTF-16 surrogates; and in parsed JSON, no
number that is not finite. Pure Python.

PostgreSQL refuses both (a NUL byte in text or JSON, a surrogate that is not UTF-8), and SQLite
stores them only to hand back what no page can show. Every way in — forms, API schemas, imports,
services — asks ``problem`` first, so that a bad character is a clear error naming its field.
"""

from __future__ import annotations

import math
import re
from typing import Any

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


def nonfinite(value: Any, where: str = "") -> tuple[str, float] | None:
    """The first number in parsed JSON that is not finite (NaN, Infinity, or 1e400, which Python's
    parser reads as infinity), with where it is ("metadata.score", "items[2]"), or None. JSON has no
    such numbers and PostgreSQL refuses them; iterative, so any depth is safe."""
    stack = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return at, item
        if isinstance(item, dict):
            stack.extend((v, f"{at}.{k}" if at else str(k)) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(item))
    return None


def nonfinite_problem(value: Any, where: str = "") -> str | None:
    """Why parsed JSON cannot be stored, naming the field, or None."""
    found = nonfinite(value, where)
    if found is None:
        return None
    at, number = found
    if math.isnan(number):
        shown = "NaN"
    else:
        shown = f"{'-' if number < 0 else ''}Infinity (or a number too large, like 1e400)"
    return f"{at}: {shown} is not a number JSON can hold" if at else f"{shown} is not a number JSON can hold"
