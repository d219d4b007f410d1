"""What every remote job's entry point shares: its log is its channel, training stops on SIGTERM.

A job on remote hardware (Hugging Face Jobs: :mod:`.hf_job`; a Kubernetes pod: :mod:`.k8s_job`)
runs the local trainer unchanged in a run directory of its own, and reports through its log only
(:mod:`.joblog`): :class:`PrintingRunDir` prints each event the trainer records, :func:`train`
turns SIGTERM (a cancelled job, a deleted pod) into a stop at the next step boundary and a failure
into one ``ANYTUNE_ERROR`` line. Where the inputs come from and where the adapter goes is each entry
point's own business.

Only light modules are imported at module level: torch and the trainer load inside :func:`train`.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import traceback
from types import FrameType
from typing import Any

from anytune._secrets import redact
from anytune._types import Checkpoint, JobStatus, MetricPoint
from anytune.local_backend.joblog import ERROR_PREFIX, LOG_ERROR_PREFIX, METRIC_PREFIX, WARNING_PREFIX
from anytune.local_backend.rundir import RunDir

__all__ = ["PrintingRunDir", "fail", "print_traceback", "public_result", "say", "train"]


def say(text: str) -> None:
    """One line on the job's log, redacted (a job may hold a token in its environment)."""
    print(redact(text), flush=True)


def print_traceback() -> None:
    print(redact(traceback.format_exc()), file=sys.stderr, flush=True)


def fail(message: str, code: str) -> int:
    """Print the ``ANYTUNE_ERROR`` line the provider reads the failure from; the exit status 1."""
    say(ERROR_PREFIX + json.dumps({"message": message, "code": code}))
    return 1


def public_result(result: dict[str, Any]) -> dict[str, Any]:
    """The trainer's result without its job-side paths (they mean nothing outside the job)."""
    return {k: v for k, v in result.items() if not k.endswith("_path")}


class PrintingRunDir(RunDir):
    """A run directory that also prints each event on stdout: the job's log is its only channel."""

    def emit(
        self,
        kind: str,
        message: str,
        *,
        status: JobStatus | None = None,
        level: str = "info",
        metric: MetricPoint | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        super().emit(kind, message, status=status, level=level, metric=metric, checkpoint=checkpoint)
        if status is JobStatus.QUEUED:
            return  # the run directory's own bookkeeping: the job is running by now
        if metric is not None:
            say(METRIC_PREFIX + metric.model_dump_json(exclude_none=True, exclude_defaults=True))
        elif level == "error":
            say(LOG_ERROR_PREFIX + message)
        elif level == "warning":
            say(WARNING_PREFIX + message)
        else:
            say(f"[anytune] {message}")


def train(run: RunDir, *, resume: bool = False, node_rank: int = 0) -> dict[str, Any] | int:
    """Run the trainer on ``run``; SIGTERM stops it at the next step boundary (a checkpoint is kept).

    Returns:
        The trainer's result (``{}`` on a process that is not the writer), or the exit status 1
        once the failure's ``ANYTUNE_ERROR`` line (or the cancel) is printed.
    """

    def on_signal(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):
            run.cancel_file.touch()
        say(f"[anytune] signal {signum}: stopping at the next step boundary")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        from anytune.local_backend.train import run_training

        result = run_training(run, resume=resume, node_rank=node_rank)
    except Exception as exc:
        print_traceback()
        code = getattr(exc, "code", None)
        return fail(f"{type(exc).__name__}: {exc}", code if isinstance(code, str) else "training_failed")
    if result.get("status") == "cancelled" or run.cancel_requested():
        say(f"[anytune] cancelled after {result.get('steps')} steps: nothing published")
        return 1
    return result
