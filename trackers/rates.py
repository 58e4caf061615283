"""Request rates counted in Redis, one counter per caller and window for every web process, taken in
leases so that most requests cost no round trip.

A rate is "N/P" ("1200/m", "100/h", "5/10s"): at most N requests in each window of P. A window is a
fixed span, shifted per counter by a hash of its name so that callers' windows do not all end at the
same second. A process asks Redis for a *lease* of several requests at once (one ``INCRBY`` in one
round trip) and spends it locally; the counter in Redis is what every process has taken together,
so no more than N requests pass in a window, whichever processes answer them. The lease is a
hundredth of the rate (at least one: below 200 a window, every request is counted in Redis as it
comes), so what another process holds unspent and a caller is refused early is at most that much per
process. Once a window is spent, the process refuses the caller without asking again until the
window ends.
"""

from __future__ import annotations

import math
import re
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

LEASE_PARTS = 100  # a lease is this fraction of the rate
MAX_KEPT = 50_000  # counters a process keeps leases of in one window length; past it, all are dropped

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*$")

clock = time.time  # the counters' clock (tests move it)


@dataclass(frozen=True)
class Rate:
    limit: int
    period: int  # seconds

    @classmethod
    def parse(cls, text: str) -> Rate:
        found = _RATE.match(text or "")
        if found is None:
            raise ValueError(f"{text!r} is not a rate: write it as requests/period, as in 600/m or 5/10s")
        limit, many, unit = found.groups()
        return cls(int(limit), int(many or 1) * _UNITS[unit])

    @property
    def lease(self) -> int:
        return max(1, self.limit // LEASE_PARTS)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    wait_s: int  # seconds until the caller's window ends: a refused caller's Retry-After


class Counters:
    """The leases this process holds, per counter and window."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._left: dict[tuple[str, int], int] = {}  # (counter, window end) → requests leased, not spent
        self._spent: set[tuple[str, int]] = set()  # windows Redis has no more requests in

    def take(self, client: Callable[[], Any], name: str, rate: Rate) -> Verdict:
        """Spend one request of ``rate`` for the counter ``name`` (a Redis key); ``client`` gives a
        redis-py client, asked for only when this process has no lease left. Redis errors propagate."""
        now = clock()
        offset = zlib.crc32(name.encode()) % rate.period
        end = math.floor((now - offset) / rate.period) * rate.period + offset + rate.period
        wait = max(1, math.ceil(end - now))
        window = (name, end)
        with self._lock:
            if window in self._spent:
                return Verdict(False, wait)
            left = self._left.get(window, 0)
            if left > 0:
                self._left[window] = left - 1
                return Verdict(True, wait)
        key = f"{name}:{end}"
        pipe = client().pipeline(transaction=False)
        pipe.set(key, 0, ex=rate.period + 1, nx=True)  # the counter outlives its window by a second
        pipe.incrby(key, rate.lease)
        taken = int(pipe.execute()[1])
        granted = max(0, min(rate.lease, rate.limit - (taken - rate.lease)))
        with self._lock:
            if len(self._left) + len(self._spent) >= MAX_KEPT:
                self._forget_before(now)
            if granted == 0:
                self._spent.add(window)
                return Verdict(False, wait)
            self._left[window] = self._left.get(window, 0) + granted - 1
        return Verdict(True, wait)

    def _forget_before(self, now: float) -> None:
        self._left = {w: n for w, n in self._left.items() if w[1] > now}
        self._spent = {w for w in self._spent if w[1] > now}
        if len(self._left) + len(self._spent) >= MAX_KEPT:  # all current: a flood of callers
            self._left.clear()
            self._spent.clear()

    def clear(self) -> None:
        with self._lock:
            self._left.clear()
            self._spent.clear()
