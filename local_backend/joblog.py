"""The log-line protocol of a remote training job: the one channel from the job to its provider.

A job on remote hardware (Hugging Face Jobs today) has no run directory the provider can read; its
log is the only channel back. The job entry point (:mod:`anytune.local_backend.hf_job`) prints these
lines and the provider reads them with :func:`parse_line`. Both sides import this module, as the
local provider and its worker both import :mod:`anytune.local_backend.rundir`, so neither imports
the other.

Lines:

* ``ANYTUNE_METRIC {MetricPoint json}`` one per logging step;
* ``ANYTUNE_RESULT {"hub_repo", "revision", "result"}`` once, after the push;
* ``ANYTUNE_ERROR {"message", "code"}`` once, when the trainer fails;
* ``[anytune] WARNING: ...`` / ``[anytune] ERROR: ...`` / ``[anytune] ...`` for everything else.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import ValidationError

from anytune._types import MetricPoint

__all__ = [
    "ERROR_PREFIX",
    "LOG_ERROR_PREFIX",
    "METRIC_PREFIX",
    "RESULT_PREFIX",
    "WARNING_PREFIX",
    "LineKind",
    "parse_line",
]

METRIC_PREFIX = "ANYTUNE_METRIC "
RESULT_PREFIX = "ANYTUNE_RESULT "
ERROR_PREFIX = "ANYTUNE_ERROR "
WARNING_PREFIX = "[anytune] WARNING: "
LOG_ERROR_PREFIX = "[anytune] ERROR: "

LineKind = Literal["metric", "result", "error", "log"]


def parse_line(line: str) -> tuple[LineKind, Any]:
    """What one log line says: a metric point, the pushed result, the trainer's error, or text.

    A line that looks like one of ours but does not parse stays text.
    """
    try:
        if line.startswith(METRIC_PREFIX):
            return "metric", MetricPoint.model_validate_json(line[len(METRIC_PREFIX) :])
        for prefix, kind in ((RESULT_PREFIX, "result"), (ERROR_PREFIX, "error")):
            if line.startswith(prefix):
                payload = json.loads(line[len(prefix) :])
                if isinstance(payload, dict):
                    return ("result" if kind == "result" else "error"), payload
    except (ValueError, ValidationError):
        pass
    return "log", line
