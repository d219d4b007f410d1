"""A Hub job read back (pure): ``JobInfo`` -> :class:`JobView` -> uniform record, events and error.

Events are stage changes and the job's log, which the Hub replays from its first line on every read;
a log line's event id is its index in that replay, so polls and reconnects (a dropped stream is read
again) neither lose nor repeat an event. Status events take fixed ids around the log: scheduled
``0``, running ``1``, log line ``i`` at ``i + 2``, the final stage last. The log's own protocol (metric,
result and error lines) is :mod:`anytune.local_backend.joblog`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from anytune._secrets import redact
from anytune._timestamps import parse_timestamp
from anytune._types import Event, JobError, JobRecord, JobStatus, MetricPoint
from anytune.local_backend.joblog import ERROR_PREFIX, LOG_ERROR_PREFIX, WARNING_PREFIX, LineKind, parse_line

from .request import entry_args
from .status import map_stage

if TYPE_CHECKING:
    from huggingface_hub import JobInfo

__all__ = [
    "EPOCH",
    "TERMINAL_EVENT_ID",
    "JobView",
    "job_events",
    "last_of_kind",
    "metric_points",
    "record_from_view",
    "view_from_info",
]

#: Sorts jobs without a creation time last (newest first).
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
TERMINAL_EVENT_ID = "9" * 10


@dataclass(frozen=True)
class JobView:
    """What anytune reads from a Jobs API job (``JobInfo``), independent of the SDK's classes."""

    id: str
    namespace: str
    stage: str
    message: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    flavor: str | None = None
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    command: Sequence[str] = ()
    url: str | None = None
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ref_id(self) -> str:
        return f"{self.namespace}/{self.id}"

    def arg(self, name: str) -> str | None:
        args = entry_args(self.command)
        return args[args.index(name) + 1] if name in args[:-1] else None

    @property
    def output_repo(self) -> str | None:
        return self.arg("--output-repo")

    @property
    def base_model(self) -> str | None:
        raw = self.arg("--spec")
        try:
            value = json.loads(raw).get("base_model") if raw else None
        except ValueError:
            return None
        return value if isinstance(value, str) else None


def _json_ready(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _enum_value(value: Any) -> str:
    return str(getattr(value, "value", value))


def view_from_info(info: JobInfo, namespace: str | None = None) -> JobView:
    """A :class:`JobView` of huggingface_hub's ``JobInfo`` (secrets keep their names only)."""
    is_instance = dataclasses.is_dataclass(info) and not isinstance(info, type)
    fields = dataclasses.asdict(info) if is_instance else dict(vars(info))
    raw = {k: v for k, v in fields.items() if k != "secrets"}
    raw["secrets"] = sorted(info.secrets or {})  # names only
    return JobView(
        id=info.id,
        namespace=namespace or info.owner.name,
        stage=_enum_value(info.status.stage),
        message=info.status.message,
        created_at=parse_timestamp(info.created_at),
        started_at=parse_timestamp(info.started_at),
        finished_at=parse_timestamp(info.finished_at),
        flavor=_enum_value(info.flavor) if info.flavor else None,
        labels=dict(info.labels or {}),
        command=list(info.command or []),
        url=info.url,
        raw=_json_ready(raw),
    )


# -- the log ----------------------------------------------------------------------------------------


def last_of_kind(lines: Sequence[str], kind: LineKind) -> Any:
    """The payload of the last line of ``kind`` (``"result"``, ``"error"``...), or None."""
    for line in reversed(lines):
        found, payload = parse_line(line)
        if found == kind:
            return payload
    return None


def metric_points(lines: Sequence[str]) -> list[MetricPoint]:
    """The metric points of a log, one per step (a repeated step keeps its last point), in step order."""
    points = {p.step: p for kind, p in map(parse_line, lines) if kind == "metric"}
    return [points[s] for s in sorted(points)]


def _eid(position: int) -> str:
    return f"{position:010d}"


def _metric_message(point: MetricPoint) -> str:
    parts = [f"step {point.step}"]
    for name in ("train_loss", "valid_loss", "token_accuracy"):
        value = getattr(point, name)
        if value is not None:
            parts.append(f"{name} {value:.4f}")
    return ", ".join(parts)


def _line_level(line: str) -> Literal["info", "warning", "error"]:
    if line.startswith((LOG_ERROR_PREFIX, ERROR_PREFIX, "Traceback (most recent call last)")):
        return "error"
    if line.startswith(WARNING_PREFIX):
        return "warning"
    return "info"


def job_events(view: JobView, lines: Sequence[str]) -> list[Event]:
    """Every event of a job so far, oldest first, with ids stable across reads and processes.

    A plain log line has no timestamp of its own through the Jobs API: it takes the latest time
    known before it (the job's start, or the last metric point's time), so times never go back.
    """
    status = map_stage(view.stage)
    t = view.created_at or EPOCH
    flavor = f" on {view.flavor}" if view.flavor else ""
    events = [
        Event(
            id=_eid(0),
            kind="status",
            time=t,
            status=JobStatus.QUEUED,
            message=f"job scheduled{flavor}",
            raw={"stage": "SCHEDULING"},
        )
    ]
    if view.started_at is not None or lines or status is JobStatus.RUNNING:
        t = max(t, view.started_at or t)
        events.append(
            Event(
                id=_eid(1),
                kind="status",
                time=t,
                status=JobStatus.RUNNING,
                message="job running",
                raw={"stage": "RUNNING"},
            )
        )
    result: dict[str, Any] | None = None
    for i, line in enumerate(lines):
        kind, payload = parse_line(line)
        if kind == "metric":
            point: MetricPoint = payload
            t = max(t, point.time) if point.time is not None else t
            events.append(Event(id=_eid(i + 2), kind="metric", time=t, metric=point, message=_metric_message(point)))
            continue
        if kind == "result":
            result = payload
            text = f"adapter pushed to {payload.get('hub_repo')} at revision {payload.get('revision')}"
        elif kind == "error":
            text = f"training failed: {payload.get('message')}"
        else:
            text = line
        level = "error" if kind == "error" else _line_level(line)
        events.append(Event(id=_eid(i + 2), kind="log", time=t, message=text, level=level))
    if status.is_terminal:
        events.append(
            Event(
                id=TERMINAL_EVENT_ID,
                kind="status",
                time=max(t, view.finished_at or t),
                status=status,
                message=_final_message(view, status, result, lines),
                level="error" if status is JobStatus.FAILED else "info",
                raw={"stage": view.stage},
            )
        )
    return events


def _final_message(view: JobView, status: JobStatus, result: Mapping[str, Any] | None, lines: Sequence[str]) -> str:
    if status is JobStatus.SUCCEEDED:
        if result:
            return f"job completed: adapter at {result.get('hub_repo')} revision {result.get('revision')}"
        return "job completed"
    if status is JobStatus.FAILED:
        error = _job_error(view, lines, 0)
        return f"job failed: {error.message}" if error else "job failed"
    return "job deleted" if view.stage.upper() == "DELETED" else "job cancelled"


def _job_error(view: JobView, lines: Sequence[str], tail: int) -> JobError | None:
    status = map_stage(view.stage)
    if status is JobStatus.CANCELLED:
        return JobError(
            message="the job was deleted" if view.stage.upper() == "DELETED" else "the job was cancelled",
            code=view.stage.lower(),
        )
    if status is not JobStatus.FAILED:
        return None
    trainer = last_of_kind(lines, "error")
    message = (
        (str(trainer.get("message")) if trainer else None)
        or redact(view.message or "")
        or ("the job ended with an error")
    )
    code = str(trainer.get("code")) if trainer and trainer.get("code") else "job_error"
    shown = [line for line in lines if parse_line(line)[0] != "metric"][-tail:] if tail else []
    if shown:
        message += "\nlast log lines:\n" + "\n".join(shown)
    return JobError(message=message, code=code)


def record_from_view(
    provider: str, view: JobView, lines: Sequence[str] | None = None, *, error_log_lines: int = 20
) -> JobRecord:
    """The uniform record of a job (pure); ``lines``, when read, add progress, result and error."""
    status = map_stage(view.stage)
    log = list(lines or [])
    result = last_of_kind(log, "result") if log else None
    points = [p for kind, p in map(parse_line, log) if kind == "metric"]
    trained = result.get("result", {}).get("train_tokens") if isinstance(result, dict) else None
    output: dict[str, Any] = {
        "hub_repo": view.output_repo,
        "url": view.url,
        "flavor": view.flavor,
        "dataset_repo": view.arg("--dataset-repo"),
    }
    if result:
        output["revision"] = result.get("revision")
    return JobRecord(
        provider=provider,
        id=view.ref_id,
        status=status,
        raw_status=view.stage,
        base_model=view.base_model,
        fine_tuned_model=view.output_repo if status is JobStatus.SUCCEEDED else None,
        created_at=view.created_at,
        started_at=view.started_at,
        finished_at=view.finished_at,
        error=_job_error(view, log, error_log_lines),
        step=points[-1].step if points else None,
        trained_tokens=trained if isinstance(trained, int) else None,
        output={k: v for k, v in output.items() if v is not None},
        raw=dict(view.raw),
    )
