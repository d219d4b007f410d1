"""Status tables (pure): the services' job statuses, and the event messages that announce a change.

A table, not a ladder: adding a status a service starts sending is one row here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from anytune._types import EventKind, JobStatus

__all__ = ["AZURE_STATUS", "OPENAI_STATUS", "STATUS_MESSAGES", "map_status"]

logger = logging.getLogger("anytune.providers.openai")

#: OpenAI job statuses.  ``pausing``/``resuming`` are not in the published enum but the pause and
#: resume endpoints exist, so they are mapped rather than guessed at.
OPENAI_STATUS: Mapping[str, JobStatus] = {
    "validating_files": JobStatus.VALIDATING,
    "queued": JobStatus.QUEUED,
    "running": JobStatus.RUNNING,
    # A pause that was accepted: training stops at the next checkpoint, and no more is billed.
    "pausing": JobStatus.PAUSED,
    "paused": JobStatus.PAUSED,
    "resuming": JobStatus.RUNNING,
    "succeeded": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED,
}

#: Azure OpenAI adds ``created`` (accepted, inputs being checked) and ``pending`` (waiting for
#: capacity) before ``running``, and spells cancelled both ways across api-versions.
AZURE_STATUS: Mapping[str, JobStatus] = {
    **OPENAI_STATUS,
    "created": JobStatus.VALIDATING,
    "pending": JobStatus.QUEUED,
    "canceled": JobStatus.CANCELLED,
}


def map_status(raw: str | None, table: Mapping[str, JobStatus]) -> JobStatus:
    """The uniform status of a raw service status.

    An unknown status (a service adding one) maps to ``running``: it is not terminal, so ``wait``
    keeps polling instead of reporting an outcome that did not happen; the raw value stays on the
    record.
    """
    if raw:
        found = table.get(raw) or table.get(raw.lower())
        if found is not None:
            return found
    logger.warning("unknown fine-tuning job status %r; treating it as running", raw)
    return JobStatus.RUNNING


#: (pattern, kind, status) for the messages both services write on state changes; first match wins.
STATUS_MESSAGES: tuple[tuple[re.Pattern[str], EventKind, JobStatus | None], ...] = (
    (re.compile(r"^validating training file", re.I), "status", JobStatus.VALIDATING),
    (re.compile(r"moving job to queued state|^job enqueued", re.I), "status", JobStatus.QUEUED),
    (re.compile(r"^fine-?tuning job started|^job started", re.I), "status", JobStatus.RUNNING),
    (re.compile(r"^checkpoint created at step", re.I), "checkpoint", None),
    (re.compile(r"successfully completed|^(fine-?tuning )?job succeeded", re.I), "status", JobStatus.SUCCEEDED),
    (re.compile(r"^(fine-?tuning )?job (was |has been )?cancell?ed", re.I), "status", JobStatus.CANCELLED),
    (re.compile(r"^(fine-?tuning )?job (has been |was )?paused", re.I), "status", JobStatus.PAUSED),
    (re.compile(r"^(fine-?tuning )?job (has been |was )?resumed", re.I), "status", JobStatus.RUNNING),
    (re.compile(r"^(fine-?tuning )?job failed", re.I), "status", JobStatus.FAILED),
)
