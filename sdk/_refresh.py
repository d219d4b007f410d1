"""Refreshing many jobs at once, each provider in its own lane, within one deadline.

``FineTuneJob.list`` shows current state, not the state the store last saw: every unfinished row
is asked of its provider again.  The rows of one provider (and settings) share a lane of a few
worker threads, so a provider that hangs holds up only its own rows; the caller waits until every
answer is in or the deadline passes, whichever is first, and whatever did not answer by then is
reported as such (the caller shows the stored row, marked stale).

The workers are daemon threads, not a ``concurrent.futures`` pool: an executor's threads are
joined when the interpreter exits, so one hung request would keep ``anytune jobs list`` from
exiting long after it printed its table.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from anytune.errors import AnytuneError, JobNotFoundError

__all__ = ["DEFAULT_TIMEOUT", "Answer", "fetch_all"]

#: Seconds ``FineTuneJob.list`` waits for providers' answers by default.
DEFAULT_TIMEOUT = 5.0
#: Requests in flight at once per lane (provider and settings).
LANE_WORKERS = 4

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Answer(Generic[R]):
    """What one fetch gave: a ``value``, or why there is none (``error``)."""

    value: R | None = None
    error: str | None = None


def _why(exc: BaseException) -> str:
    if isinstance(exc, JobNotFoundError):
        return f"the provider no longer knows it ({exc.message})"
    if isinstance(exc, AnytuneError):
        return f"{type(exc).__name__}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def fetch_all(
    items: Sequence[T],
    fetch: Callable[[T], R],
    *,
    lane: Callable[[T], Hashable],
    timeout: float | None,
    describe: Callable[[T], str] = lambda item: "the provider",
    clock: Callable[[], float] = time.monotonic,
) -> list[Answer[R]]:
    """``fetch(item)`` for every item, concurrently by lane, waiting at most ``timeout`` seconds.

    Args:
        items: what to fetch.
        fetch: one fetch; any exception it raises becomes that item's ``error``.
        lane: the lane of an item (items of one lane share :data:`LANE_WORKERS` threads).
        timeout: seconds to wait in all (None: until every fetch ends).
        describe: names who was asked, for the message of a fetch that did not end in time.

    Returns:
        One :class:`Answer` per item, in order.
    """
    answers: list[Answer[R] | None] = [None] * len(items)
    lanes: dict[Hashable, queue.SimpleQueue[int]] = {}
    for index, item in enumerate(items):
        lanes.setdefault(lane(item), queue.SimpleQueue()).put(index)
    finished = threading.Condition()
    late = threading.Event()  # past the deadline: start nothing more

    def work(todo: queue.SimpleQueue[int]) -> None:
        while not late.is_set():
            try:
                index = todo.get_nowait()
            except queue.Empty:
                return
            try:
                answer: Answer[R] = Answer(value=fetch(items[index]))
            except Exception as exc:  # one job's failure must not cost the others their answer
                answer = Answer(error=_why(exc))
            with finished:
                answers[index] = answer
                finished.notify_all()

    deadline = None if timeout is None else clock() + timeout
    for todo in lanes.values():
        for _ in range(min(LANE_WORKERS, todo.qsize())):
            threading.Thread(target=work, args=(todo,), daemon=True, name="anytune-refresh").start()
    with finished:
        while any(a is None for a in answers):
            left = None if deadline is None else deadline - clock()
            if left is not None and left <= 0:
                break
            finished.wait(left)
        late.set()
        after = f"no answer within {timeout:g} s" if timeout is not None else "no answer"
        return [
            a if a is not None else Answer(error=f"{after} from {describe(items[i])}") for i, a in enumerate(answers)
        ]
