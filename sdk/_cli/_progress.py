"""Progress as plain lines, for output that is not a terminal (CI logs, pipes, files).

A view redrawn in place shows nothing useful in a log. Off a terminal ``jobs wait``, ``jobs create
--wait``, ``jobs resume --wait`` and ``anytune demo`` print each status change, log line and
checkpoint as it comes, and the training progress as one line at most every ``interval`` seconds
(``--progress-interval``, ``ANYTUNE_PROGRESS_INTERVAL``; default 5), with the last figures once more
at the end if they changed since::

    12:00:05 progress   step 40/120 (33%), loss 1.2345, valid 1.3010, 1,234 tok/s, ETA 1m05s

Rates and the ETA come from the events' own times, so a job followed from its start and one joined
halfway (its history replayed in one go) read the same.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import typer

from anytune._cli._common import safe
from anytune._types import Event, JobRecord

DEFAULT_INTERVAL = 5.0

IntervalOpt = Annotated[
    float,
    typer.Option(
        "--progress-interval",
        min=0,
        envvar="ANYTUNE_PROGRESS_INTERVAL",
        help="Off a terminal (CI logs, pipes): seconds between progress lines.",
    ),
]


def duration(seconds: float) -> str:
    """``45s``, ``3m05s``, ``2h07m``: short and fixed in form, for an ETA."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole // 60 % 60:02d}m"


@dataclass
class _Mark:
    """A step (and the tokens seen by then) at a moment of the job's own clock."""

    step: int
    at: datetime
    tokens: int | None


class ProgressLines:
    """Turns a job's events into the lines to print (pure apart from ``clock``; tested that way).

    Args:
        interval: least seconds (of ``clock``) between two progress lines; 0 prints every metric.
        clock: what the interval is measured on.
    """

    def __init__(self, interval: float = DEFAULT_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._printed_at = -math.inf
        self._printed: str | None = None
        self._first: _Mark | None = None
        self._last: _Mark | None = None
        self._loss: float | None = None
        self._valid: float | None = None
        self._speed: float | None = None  # tokens/s as the provider reports it
        self._when: datetime | None = None

    def feed(self, event: Event, record: JobRecord | None = None) -> list[str]:
        """The lines to print now for ``event``; ``record`` (the job as last read) gives the total."""
        if event.metric is None:
            # The last figures come before the job's final word, not after it.
            flush = self.finish(record) if event.status is not None and event.status.is_terminal else []
            return [*flush, safe(event)]
        point = event.metric
        at = point.time or event.time
        mark = _Mark(point.step, at, point.tokens_seen)
        if self._first is None or point.step < self._first.step:
            self._first = mark  # a resumed job starts its count again
        self._last = mark
        self._when = event.time
        self._loss = point.train_loss if point.train_loss is not None else self._loss
        self._valid = point.valid_loss if point.valid_loss is not None else self._valid
        self._speed = point.tokens_per_second if point.tokens_per_second is not None else self._speed
        if self.clock() - self._printed_at < self.interval:
            return []
        return self._line(record)

    def finish(self, record: JobRecord | None = None) -> list[str]:
        """The last figures, unless the last progress line already showed them."""
        return self._line(record) if self._last is not None else []

    def _line(self, record: JobRecord | None) -> list[str]:
        text = self.summary(record.total_steps if record is not None else None)
        if text == self._printed:
            return []
        self._printed, self._printed_at = text, self.clock()
        stamp = f"{self._when:%H:%M:%S} " if self._when is not None else ""
        return [f"{stamp}{'progress':<10} {text}"]

    def summary(self, total: int | None = None) -> str:
        """``step 40/120 (33%), loss 1.2345, valid 1.3010, 1,234 tok/s, ETA 1m05s`` (what is known)."""
        last = self._last
        if last is None:
            return "no progress reported yet"
        parts = [f"step {last.step}/{total} ({last.step / total:.0%})" if total else f"step {last.step}"]
        if self._loss is not None:
            parts.append(f"loss {self._loss:.4f}")
        if self._valid is not None:
            parts.append(f"valid {self._valid:.4f}")
        first = self._first
        elapsed = (last.at - first.at).total_seconds() if first is not None else 0.0
        speed = self._speed
        if speed is None and first is not None and first.tokens is not None and last.tokens is not None and elapsed > 0:
            speed = (last.tokens - first.tokens) / elapsed
        if speed is not None and speed > 0:
            parts.append(f"{speed:,.0f} tok/s")
        if total and first is not None and elapsed > 0 and last.step > first.step and last.step < total:
            rate = (last.step - first.step) / elapsed
            parts.append(f"ETA {duration((total - last.step) / rate)}")
        return ", ".join(parts)
