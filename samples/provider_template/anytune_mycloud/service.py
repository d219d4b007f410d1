"""The service's client: what your service's SDK gives you. Here, a stand-in that keeps its jobs in
files, so the template runs anywhere (and across processes) without an account.

A job moves QUEUED -> RUNNING -> DONE as it is read, one step per read.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Protocol


class MyCloudError(Exception):
    """What the SDK raises: an HTTP status and the server's message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.headers = headers or {}


class MyCloudClient(Protocol):
    """The calls the provider makes; a real SDK client, or a fake in tests."""

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def get_job(self, job_id: str) -> dict[str, Any]: ...

    def list_jobs(self, *, tag: str | None = None) -> list[dict[str, Any]]: ...

    def cancel_job(self, job_id: str) -> dict[str, Any]: ...

    def job_events(self, job_id: str) -> list[dict[str, Any]]: ...


_STEPS = ("QUEUED", "RUNNING", "DONE")


class FileMyCloud:
    """A stand-in service: one JSON file per job under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()

    def _path(self, job_id: str) -> Path:
        if not job_id.startswith("mc-") or "/" in job_id or "\\" in job_id:
            raise MyCloudError(404, f"no job {job_id}")
        return self.root / f"{job_id}.json"

    def _load(self, job_id: str) -> dict[str, Any]:
        try:
            job: dict[str, Any] = json.loads(self._path(job_id).read_text())
        except FileNotFoundError:
            raise MyCloudError(404, f"no job {job_id}") from None
        return job

    def _save(self, job: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{job['id']}.tmp"
        tmp.write_text(json.dumps(job))
        tmp.replace(self._path(job["id"]))

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        job = {
            "id": f"mc-{uuid.uuid4().hex[:12]}",
            "state": "QUEUED",
            "model": body["model"],
            "tags": dict(body.get("tags") or {}),
            "created": time.time(),
            "events": [{"seq": 1, "text": "job queued", "at": time.time()}],
        }
        with self._lock:
            self._save(job)
        return job

    def get_job(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._load(job_id)
            if job["state"] in _STEPS[:-1]:
                job["state"] = _STEPS[_STEPS.index(job["state"]) + 1]
                job["events"].append(
                    {"seq": len(job["events"]) + 1, "text": f"job {job['state'].lower()}", "at": time.time()}
                )
                if job["state"] == "DONE":
                    job["output_model"] = f"{job['model']}-ft-{job['id']}"
                self._save(job)
        return job

    def list_jobs(self, *, tag: str | None = None) -> list[dict[str, Any]]:
        if not self.root.is_dir():
            return []
        jobs = [json.loads(p.read_text()) for p in self.root.glob("mc-*.json")]
        if tag is not None:
            jobs = [j for j in jobs if tag in j["tags"].values()]
        return sorted(jobs, key=lambda j: j["created"], reverse=True)

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._load(job_id)
            if job["state"] not in ("DONE", "CANCELLED"):
                job["state"] = "CANCELLED"
                job["events"].append({"seq": len(job["events"]) + 1, "text": "job cancelled", "at": time.time()})
                self._save(job)
        return job

    def job_events(self, job_id: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self._load(job_id)["events"]
        return events
