"""Small fakes for testing providers: a clock that moves when slept on, scripted faults."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

__all__ = ["FakeClock", "FaultScript"]

T = TypeVar("T")


class FakeClock:
    """A monotonic clock that moves only when slept on or advanced (:meth:`advance`).

    The instance is the clock (call it) and :meth:`sleep` its sleep: pass ``clock=fake,
    sleep=fake.sleep`` to a provider or a job handle. ``sleeps`` records every wait, so a test
    can assert that a server's Retry-After was honoured.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.start = start
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def clock(self) -> float:
        """The same as calling the instance, for code that wants a bound method."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Let time pass without a sleep (the service's side of the story)."""
        with self._lock:
            self.now += seconds

    def sleep(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"sleep of {seconds} s: a negative wait is a bug in the caller")
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


class FaultScript(Generic[T]):
    """Make a call fail as scripted, then behave.

    ``FaultScript(create, [ConnectionError(), None])`` raises the first exception on the first
    call, runs ``create`` on the second and every later call (``None`` in the script means "run the
    call"). ``calls`` counts the attempts, ``ran`` the calls that reached ``create``; for a
    fault that happens *after* the service acted (the answer lost on the way back), use
    :meth:`after`.
    """

    def __init__(self, call: Callable[..., T], faults: Iterable[BaseException | None]) -> None:
        self._call = call
        self._faults = list(faults)
        self._lock = threading.Lock()
        self.calls = 0
        self.ran = 0
        self._late: set[int] = set()

    def after(self, *attempts: int) -> FaultScript[T]:
        """Mark attempts (1-based) whose fault is raised after ``call`` ran: the service acted."""
        self._late.update(attempts)
        return self

    def __call__(self, *args: object, **kwargs: object) -> T:
        with self._lock:
            self.calls += 1
            attempt = self.calls
            fault = self._faults[attempt - 1] if attempt <= len(self._faults) else None
        if fault is not None and attempt not in self._late:
            raise fault
        result = self._call(*args, **kwargs)
        with self._lock:
            self.ran += 1
        if fault is not None:
            raise fault
        return result
