"""The event journal: what :meth:`AzureMLProvider.get` observed, with ids that stay stable.

Azure ML keeps no event list for a fine-tuning job, so anytune writes one: each status change
observed, the run's warnings (the job's own log lines anytune can read without its files), and each
metric step, appended under ``ANYTUNE_HOME/azureml/events/<job>.jsonl`` under a cross-process lock.
Ids are positions in that file, so ``events(after=...)`` resumes without gaps or duplicates, in
this process or another.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from anytune._secrets import redact
from anytune._types import Event, JobRecord, JobStatus, MetricPoint, utcnow
from anytune.errors import JobNotFoundError
from anytune.providers.azureml.errors import NAME

Make = Callable[[list[Event]], list[Event]]


def _event_id(position: int) -> str:
    return f"{position:08d}"


def warning_events(current: Sequence[Event], warnings: Sequence[Any]) -> list[Event]:
    """Log events for the run's warnings not journalled yet (pure but for the time stamp)."""
    known = {e.message for e in current if e.kind == "log"}
    out: list[Event] = []
    for warning in warnings:
        text = redact(str(warning.get("message") if isinstance(warning, dict) else warning))
        if text and text not in known:
            known.add(text)
            out.append(
                Event(
                    id=_event_id(len(current) + len(out) + 1), kind="log", time=utcnow(), message=text, level="warning"
                )
            )
    return out


def status_event(current: Sequence[Event], record: JobRecord) -> Event | None:
    """The status event for ``record``, or None when the journal's last status is the same."""
    last = next((e for e in reversed(current) if e.kind == "status"), None)
    if last is not None and (last.raw or {}).get("status") == record.raw_status:
        return None
    message = f"{record.raw_status}"
    if record.error is not None and record.status is JobStatus.FAILED:
        message += f": {record.error.message}"
    started = record.status is JobStatus.RUNNING and last is not None and last.status is not JobStatus.RUNNING
    when = (record.finished_at if record.status.is_terminal else None) or (record.started_at if started else None)
    return Event(
        id=_event_id(len(current) + 1),
        kind="status",
        time=when or utcnow(),
        status=record.status,
        message=message,
        level="error" if record.status is JobStatus.FAILED else "info",
        raw={"status": record.raw_status},
    )


def metric_events(current: Sequence[Event], points: Sequence[MetricPoint]) -> list[Event]:
    """Metric events for the steps not journalled yet."""
    seen = {e.metric.step for e in current if e.metric is not None}
    out: list[Event] = []
    for point in points:
        if point.step in seen:
            continue
        bits = [
            f"{k} {v:.4g}"
            for k, v in (("train_loss", point.train_loss), ("valid_loss", point.valid_loss))
            if v is not None
        ]
        out.append(
            Event(
                id=_event_id(len(current) + len(out) + 1),
                kind="metric",
                time=point.time or utcnow(),
                metric=point,
                message=f"step {point.step}" + (": " + ", ".join(bits) if bits else ""),
            )
        )
    return out


class EventJournal:
    """The journals of one anytune home."""

    def __init__(self, home: Path) -> None:
        self.folder = home / "azureml" / "events"

    def path(self, job_id: str) -> Path:
        """The journal file of a job.

        Raises:
            JobNotFoundError: ``job_id`` is not an Azure ML job name (and must not become a path).
        """
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", job_id):
            raise JobNotFoundError(f"{NAME}:{job_id}", "not an Azure ML job name")
        return self.folder / f"{job_id}.jsonl"

    def read(self, job_id: str) -> list[Event]:
        path = self.path(job_id)
        if not path.is_file():
            return []
        return [Event.model_validate_json(line) for line in path.read_bytes().splitlines() if line.strip()]

    def append(self, job_id: str, make: Make) -> None:
        """Append the events ``make`` derives from the journal so far, under a cross-process lock."""
        from filelock import FileLock

        path = self.path(job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            new = make(self.read(job_id))
            if new:
                with path.open("ab") as f:
                    for event in new:
                        f.write(redact(event.model_dump_json()).encode() + b"\n")
                    f.flush()
                    os.fsync(f.fileno())

    def record_status(self, record: JobRecord, warnings: Sequence[Any] = ()) -> None:
        """Journal the run's new warnings, then the record's status if it changed."""

        def make(current: list[Event]) -> list[Event]:
            logs = warning_events(current, warnings)
            status = status_event([*current, *logs], record)
            return [*logs, status] if status is not None else logs

        self.append(record.id, make)

    def record_metrics(self, job_id: str, points: Sequence[MetricPoint]) -> None:
        """Journal the metric steps not journalled yet."""
        if points:
            self.append(job_id, lambda current: metric_events(current, points))

    def last_status(self, job_id: str) -> Event | None:
        return next((e for e in reversed(self.read(job_id)) if e.kind == "status"), None)
