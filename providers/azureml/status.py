"""Azure ML job statuses and the uniform status each one means (pure)."""

from __future__ import annotations

from collections.abc import Mapping

from anytune._types import JobStatus

#: Azure ML job status (lower case) -> uniform status.  NotResponding and CancelRequested are not
#: final: the service may still recover or is still stopping the job.
STATUS_MAP: Mapping[str, JobStatus] = {
    "notstarted": JobStatus.QUEUED,
    "starting": JobStatus.QUEUED,
    "provisioning": JobStatus.QUEUED,
    "preparing": JobStatus.QUEUED,
    "queued": JobStatus.QUEUED,
    "running": JobStatus.RUNNING,
    "finalizing": JobStatus.RUNNING,
    "cancelrequested": JobStatus.RUNNING,
    "notresponding": JobStatus.RUNNING,
    "paused": JobStatus.PAUSED,
    "completed": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "canceled": JobStatus.CANCELLED,
    "unknown": JobStatus.QUEUED,
}

#: Statuses after which a run has metrics worth reading (it ran, or it ended).
HAS_RUN: frozenset[JobStatus] = frozenset(
    {JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
)


def map_status(raw: str | None) -> JobStatus:
    """The uniform status of an Azure ML job status (case-insensitive).

    Unrecognised values count as queued: never terminal, so a caller keeps polling rather than
    report an outcome the service did not give.
    """
    return STATUS_MAP.get((raw or "unknown").strip().lower(), JobStatus.QUEUED)
