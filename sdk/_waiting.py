"""Wait until something remote is ready: one poll loop with back-off, a deadline and injected time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_until"]

T = TypeVar("T")


def wait_until(
    poll: Callable[[], T],
    ready: Callable[[T], bool],
    *,
    timeout: float,
    on_timeout: Callable[[T], BaseException],
    initial: float = 1.0,
    factor: float = 1.5,
    maximum: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call ``poll`` until ``ready`` accepts its answer; return that answer.

    ``poll`` may raise to stop early (a failed import, a refused request). Sleeps grow from
    ``initial`` by ``factor`` up to ``maximum``; once ``timeout`` seconds have passed, the error
    ``on_timeout`` builds from the last answer is raised.
    """
    deadline = clock() + timeout
    polls = 0
    while True:
        value = poll()
        if ready(value):
            return value
        if clock() >= deadline:
            raise on_timeout(value)
        sleep(min(maximum, initial * factor**polls))
        polls += 1
