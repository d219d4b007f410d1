"""The I/O-free core shared by the sync and async job handles: poll timing and event cursors."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from anytune._types import Event, JobRecord
from anytune.errors import WaitTimeoutError


@dataclass(frozen=True)
class PollPolicy:
    """Back-off between polls: ``initial`` seconds, growing by ``factor`` up to ``maximum``.

    A provider's hint (``Provider.poll_interval``, or a server's Retry-After) replaces ``initial``.
    """

    initial: float = 2.0
    maximum: float = 30.0
    factor: float = 1.5

    def delay(self, attempt: int, *, hint: float | None = None, remaining: float | None = None) -> float:
        """Seconds to sleep before poll number ``attempt`` (0-based), never past the deadline."""
        base = hint if hint is not None else self.initial
        value = min(self.maximum, base * self.factor ** max(0, attempt))
        if remaining is not None:
            value = max(0.0, min(value, remaining))
        return value


class EventCursor:
    """Hands out each event once, in order, across polls and reconnects.

    ``last`` is the id to resume from (``events(after=last)``).  A bounded memory of seen ids
    guards against a provider that re-sends an event after a reconnect.
    """

    def __init__(self, after: str | None = None, memory: int = 4096) -> None:
        self.last = after
        self._seen: deque[str] = deque(maxlen=memory)
        self._seen_set: set[str] = set()

    def accept(self, events: Iterable[Event]) -> Iterator[Event]:
        for event in events:
            if event.id in self._seen_set:
                continue
            if len(self._seen) == self._seen.maxlen:
                self._seen_set.discard(self._seen[0])
            self._seen.append(event.id)
            self._seen_set.add(event.id)
            self.last = event.id
            yield event


class Follower:
    """The I/O-free decisions of ``stream``/``wait``: which events are new, when to poll again, when
    the deadline has passed. The sync and async loops only fetch and sleep."""

    def __init__(
        self, ref: str, policy: PollPolicy, clock: Callable[[], float], timeout: float | None, after: str | None
    ) -> None:
        self.ref = ref
        self.cursor = EventCursor(after)
        self._policy = policy
        self._clock = clock
        self._timeout = timeout
        self._deadline = None if timeout is None else clock() + timeout
        self._idle = 0

    def next_delay(self, record: JobRecord, got_events: bool) -> float | None:
        """Seconds to sleep before the next poll, or ``None`` when the job has finished.

        Raises:
            WaitTimeoutError: the deadline has passed.
        """
        if record.done:
            return None
        # Back off while nothing happens; poll briskly again as soon as events flow.
        self._idle = 0 if got_events else self._idle + 1
        remaining = None if self._deadline is None else self._deadline - self._clock()
        if remaining is not None and remaining <= 0:
            raise WaitTimeoutError(self.ref, self._timeout or 0.0, record)
        return self._policy.delay(self._idle, remaining=remaining)
