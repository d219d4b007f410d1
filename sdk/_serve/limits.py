"""Request-rate limits of ``anytune serve``: a token bucket per key (pure; the clock is injected)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["RateLimiter"]


@dataclass
class RateLimiter:
    """At most ``per_minute`` requests a minute per owner, in bursts of up to ``burst``.

    :meth:`take` answers 0.0 when a request may go, else the seconds until it may (the
    ``Retry-After`` the server sends with its 429).
    """

    per_minute: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, owner: str) -> float:
        if self.per_minute <= 0:
            return 0.0
        rate = self.per_minute / 60.0
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(owner, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[owner] = (tokens - 1.0, now)
                return 0.0
            self._buckets[owner] = (tokens, now)
            return max(0.001, math.ceil((1.0 - tokens) / rate * 1000) / 1000)
