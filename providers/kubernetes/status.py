"""A Job read back (pure): its conditions and its pods' states -> anytune's status and error.

The Job's own conditions decide the end (``Complete`` / ``SuccessCriteriaMet`` succeeded, ``Failed`` /
``FailureTarget`` failed, ``Suspended`` paused); before that, the pods say whether it runs or waits,
and why it waits: a pod that cannot be scheduled (no node has the GPUs, a taint not tolerated), an
image that cannot be pulled, a volume not bound. Those reasons stay ``queued`` (Kubernetes keeps
trying) but are shown in the record's message, so a user sees "Unschedulable: 0/3 nodes have
nvidia.com/gpu" rather than a silent wait.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from anytune._types import JobError, JobStatus

__all__ = ["JOB_CONDITIONS", "WAITING_REASONS", "JobState", "job_state"]

#: Job condition type (status "True") -> the job's status, in the order they are checked.
JOB_CONDITIONS: tuple[tuple[str, JobStatus], ...] = (
    ("Complete", JobStatus.SUCCEEDED),
    ("SuccessCriteriaMet", JobStatus.SUCCEEDED),
    ("Failed", JobStatus.FAILED),
    ("FailureTarget", JobStatus.FAILED),
    ("Suspended", JobStatus.PAUSED),
)

#: A waiting container's or unschedulable pod's reason -> whether it is fatal (the job cannot start
#: as it is: an image that does not exist, a bad config) or transient (Kubernetes keeps trying).
WAITING_REASONS: Mapping[str, bool] = {
    "ContainerCreating": False,
    "PodInitializing": False,
    "Unschedulable": False,
    "ImagePullBackOff": False,
    "ErrImagePull": False,
    "InvalidImageName": True,
    "CreateContainerConfigError": True,
    "CreateContainerError": True,
}


@dataclass(frozen=True)
class JobState:
    status: JobStatus
    raw_status: str
    message: str | None = None
    error: JobError | None = None


def _true(conditions: Sequence[Mapping[str, Any]], kind: str) -> Mapping[str, Any] | None:
    for c in conditions:
        if c.get("type") == kind and str(c.get("status")) == "True":
            return c
    return None


def _pod_waiting(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    """Why a pod waits: (reason, message) of an unschedulable pod or a waiting container."""
    status = pod.get("status") or {}
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled" and str(c.get("status")) == "False":
            return str(c.get("reason") or "Unschedulable"), str(c.get("message") or "")
    for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") not in (None, "PodInitializing", "ContainerCreating"):
            return str(waiting.get("reason")), str(waiting.get("message") or "")
    return None


def _killed(pods: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """Why a pod was killed from outside the trainer (code, text): the kernel's OOM killer, an
    eviction. The trainer prints no error then, and the Job's own condition says only
    "BackoffLimitExceeded", so without this the user is not told the pod ran out of memory."""
    for pod in pods:
        name = (pod.get("metadata") or {}).get("name") or "a pod"
        status = pod.get("status") or {}
        if status.get("reason") == "Evicted":
            return "evicted", f"pod {name} was evicted: {status.get('message') or 'node pressure'}"
        for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
            terminated = (cs.get("state") or {}).get("terminated") or {}
            if terminated.get("reason") == "OOMKilled":
                return "out_of_memory", (
                    f"pod {name}'s container {cs.get('name')!r} was killed for exceeding its memory (OOMKilled): "
                    "raise settings.memory, or lower the batch size or max_seq_length"
                )
    return None


def job_state(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]] = ()) -> JobState:
    """The uniform status of a Job and its pods (pure).

    ``raw_status`` is the deciding condition's type, else the pods' phase or waiting reason.
    """
    status = job.get("status") or {}
    conditions = status.get("conditions") or []
    for kind, mapped in JOB_CONDITIONS:
        found = _true(conditions, kind)
        if found is None:
            continue
        message = str(found.get("message") or found.get("reason") or kind)
        error = None
        if mapped is JobStatus.FAILED:
            error = JobError(message=message, code=str(found.get("reason") or "job_failed"))
            killed = _killed(pods)
            if killed is not None:
                error = JobError(message=f"{killed[1]} ({message})", code=killed[0])
        return JobState(mapped, kind, message, error)
    for pod in pods:
        waiting = _pod_waiting(pod)
        if waiting is not None:
            reason, message = waiting
            text = f"{reason}: {message}" if message else reason
            if WAITING_REASONS.get(reason, False):
                return JobState(JobStatus.FAILED, reason, text, JobError(message=text, code=reason))
            return JobState(JobStatus.QUEUED, reason, text)
    phases = [str((p.get("status") or {}).get("phase") or "Pending") for p in pods]
    if int(status.get("active") or 0) > 0 and "Running" in phases:
        return JobState(JobStatus.RUNNING, "Running")
    if "Running" in phases:
        return JobState(JobStatus.RUNNING, "Running")
    if "Failed" in phases and not status.get("active"):
        return JobState(JobStatus.RUNNING, "Failed")  # the Job's Failed condition follows shortly
    return JobState(JobStatus.QUEUED, phases[0] if phases else "Pending")
