"""The run directory: the only channel between the ``local`` provider and its training worker.

Layout (everything the worker writes is atomic: a temporary file, fsync, rename; or one appended
line, which readers ignore until its newline is there)::

    RUN/
      spec.json            the resolved JobSpec (written once, by submit)
      status.json          current state (atomic replace): status, step, error, figures
      events.jsonl         append-only events; an event's id is its line number
      metrics.jsonl        append-only MetricPoints
      worker.pid           pid of the worker (or of the launcher in multi-process runs)
      worker.lock          the one-worker lock: held (flock) by the live worker for its whole life and
                           released by the OS when it dies, however it dies; holds the holder's pid
      worker.log           the worker's stdout/stderr
      cancel               present when a cancel was requested
      checkpoints/step-N/  complete checkpoints (adapter, optimizer, scheduler, RNG, progress)
      adapter/             the final PEFT adapter and tokenizer
      merged/              the merged model, when asked for
      result.json          what the job produced (written last, before the final status)

A reader may run in any process at any time, including while the worker is writing.

A run has at most one worker. Whoever starts one takes ``worker.lock`` first
(:meth:`RunDir.acquire_worker_lock`); the ``local`` provider hands its open lock to the worker it
starts (the descriptor is inherited, named by ``ANYTUNE_WORKER_LOCK_FD``), so the lock is held without a
gap from the check to the worker's last instruction, and N concurrent starts give one worker.  The
holder of the lock, and only it, removes the scratch files of writers that were killed mid-write
(:meth:`RunDir.remove_stale_scratch`): ``checkpoints/.tmp-step-*``, ``.adapter-tmp-*``,
``.merged-tmp-*`` and ``.NAME.PID.tmp``; each name carries its writer's pid, and a live writer's file
is never removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from anytune._secrets import redact
from anytune._spec import JobSpec
from anytune._types import Checkpoint, Event, JobStatus, MetricPoint

if sys.platform == "win32":
    import msvcrt
else:
    import fcntl

CHECKPOINT_PREFIX = "step-"
#: The environment variable that names the inherited descriptor of a started worker's lock.
LOCK_FD_ENV = "ANYTUNE_WORKER_LOCK_FD"
#: Scratch folders of the final adapter and the merged model (``train.py``): PREFIX + writer pid.
ADAPTER_TMP_PREFIX = ".adapter-tmp-"
MERGED_TMP_PREFIX = ".merged-tmp-"
#: Scratch names of killed writers, each with its writer's pid: checkpoint folders being filled
#: (:meth:`RunDir.new_checkpoint_tmp`), the adapter and merged-model folders, and the temporary
#: files of :func:`write_json_atomic`.
_SCRATCH = (
    re.compile(rf"^\.tmp-{CHECKPOINT_PREFIX}\d+-(\d+)-\d+$"),
    re.compile(rf"^(?:{re.escape(ADAPTER_TMP_PREFIX)}|{re.escape(MERGED_TMP_PREFIX)})(\d+)$"),
    re.compile(r"^\..+\.(\d+)\.tmp$"),
)
#: On Windows the lock is a byte far past the pid it guards, so readers can still read the pid.
_WINDOWS_LOCK_OFFSET = 1 << 30


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that readers see the old file or the new one, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = redact(json.dumps(data, default=str, indent=1))
    with tmp.open("w", encoding="utf-8") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _append_line(path: Path, data: Any) -> None:
    line = redact(json.dumps(data, default=str, separators=(",", ":"))) + "\n"
    # One write() of one line with O_APPEND: concurrent readers see whole lines or none of it.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _read_lines(path: Path) -> list[dict[str, Any]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    # A line still being written (no newline yet) is not there yet.
    complete = raw[: raw.rfind(b"\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


if sys.platform == "win32":

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

else:

    def _try_lock(fd: int) -> bool:
        # flock belongs to the open file: a started worker that inherits the descriptor holds it,
        # and the OS drops it when the last process holding that file exits, even by SIGKILL.
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


#: Take the exclusive OS lock of an open file without waiting (True when taken); the device queue
#: (:mod:`.devicequeue`) shares the run lock's mechanism, released by the OS when its holder dies.
try_lock = _try_lock


def _scratch_writer(name: str) -> int | None:
    """The writer pid in a scratch name (see ``_SCRATCH``); None for any other name."""
    for pattern in _SCRATCH:
        found = pattern.match(name)
        if found:
            return int(found.group(1))
    return None


class WorkerLock:
    """The held one-worker lock of a run (``RUN/worker.lock``), from :meth:`RunDir.acquire_worker_lock`.

    :meth:`close` closes this process's descriptor. That releases the lock unless a worker started
    with the descriptor (``pass_fds``) holds the same open file: then the lock lives as long as the
    worker does. Nothing ever unlocks it explicitly, and the file is never removed.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def __repr__(self) -> str:
        return f"WorkerLock({str(self.path)!r}, {'closed' if self._fd is None else 'held'})"

    def __enter__(self) -> WorkerLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._fd is None

    def fileno(self) -> int:
        if self._fd is None:
            raise ValueError(f"{self.path}: the worker lock is closed")
        return self._fd

    def record(self, pid: int) -> None:
        """Write the pid of the process that holds the lock (a reader names it in "already running")."""
        fd = self.fileno()
        data = f"{pid}\n".encode()
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, len(data))

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class RunDir:
    """One local job's folder. Safe to use from the worker and from any reader process."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- paths ------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.path.name

    @property
    def spec_file(self) -> Path:
        return self.path / "spec.json"

    @property
    def status_file(self) -> Path:
        return self.path / "status.json"

    @property
    def events_file(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def pid_file(self) -> Path:
        return self.path / "worker.pid"

    @property
    def log_file(self) -> Path:
        return self.path / "worker.log"

    @property
    def lock_file(self) -> Path:
        return self.path / "worker.lock"

    @property
    def cancel_file(self) -> Path:
        return self.path / "cancel"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def merged_dir(self) -> Path:
        return self.path / "merged"

    @property
    def result_file(self) -> Path:
        return self.path / "result.json"

    def exists(self) -> bool:
        return self.spec_file.is_file()

    # -- creation (by submit) ---------------------------------------------------------------
    def create(self, spec: JobSpec, *, idempotency_key: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoints_dir.mkdir(exist_ok=True)
        write_json_atomic(
            self.spec_file,
            {"spec": spec.model_dump(mode="json"), "idempotency_key": idempotency_key, "created_at": _now()},
        )
        self.set_status(JobStatus.QUEUED, raw="queued", message="job queued")

    def spec(self) -> JobSpec:
        return JobSpec.model_validate(json.loads(self.spec_file.read_text())["spec"])

    def meta(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.spec_file.read_text())
        return data

    # -- status -----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.status_file.read_text())
            return data
        except FileNotFoundError:
            return {"status": JobStatus.QUEUED.value, "raw_status": "queued"}

    def set_status(
        self, status: JobStatus, *, raw: str | None = None, message: str | None = None, **fields: Any
    ) -> None:
        """Replace status.json (merging ``fields`` into it) and log a status event when it changes."""
        current = self.status() if self.status_file.exists() else {}
        changed = current.get("status") != status.value or current.get("raw_status") != (raw or status.value)
        data = {**current, **fields, "status": status.value, "raw_status": raw or status.value, "updated_at": _now()}
        if status is JobStatus.RUNNING and "started_at" not in current:
            data["started_at"] = data["updated_at"]
        if status.is_terminal:
            data["finished_at"] = data["updated_at"]
        write_json_atomic(self.status_file, data)
        if changed:
            level = "error" if status is JobStatus.FAILED else "info"
            self.emit("status", message or (raw or status.value), status=status, level=level)

    def update(self, **fields: Any) -> None:
        """Merge progress fields (step, figures) into status.json without an event."""
        data = {**self.status(), **fields, "updated_at": _now()}
        write_json_atomic(self.status_file, data)

    # -- events and metrics -----------------------------------------------------------------
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
        _append_line(
            self.events_file,
            {
                "kind": kind,
                "time": _now(),
                "message": message,
                "level": level,
                "status": status.value if status else None,
                "metric": metric.model_dump(mode="json") if metric else None,
                "checkpoint": checkpoint.model_dump(mode="json") if checkpoint else None,
            },
        )

    def log_metric(self, point: MetricPoint) -> None:
        _append_line(self.metrics_file, point.model_dump(mode="json"))
        parts = [f"step {point.step}"]
        for name in ("train_loss", "valid_loss", "token_accuracy"):
            value = getattr(point, name)
            if value is not None:
                parts.append(f"{name} {value:.4f}")
        self.emit("metric", ", ".join(parts), metric=point)

    def events(self, after: str | None = None) -> Iterator[Event]:
        start = int(after) + 1 if after is not None else 0
        for index, item in enumerate(_read_lines(self.events_file)):
            if index >= start:
                yield Event(id=f"{index:08d}", **item)

    def metrics(self) -> list[MetricPoint]:
        points = {p["step"]: MetricPoint.model_validate(p) for p in _read_lines(self.metrics_file)}
        # A resumed run logs some steps again; the last word on a step wins.
        return [points[s] for s in sorted(points)]

    # -- worker -----------------------------------------------------------------------------
    def write_pid(self, pid: int) -> None:
        write_json_atomic(self.pid_file, {"pid": pid, "started_at": _now()})

    def pid(self) -> int | None:
        try:
            return int(json.loads(self.pid_file.read_text())["pid"])
        except (FileNotFoundError, ValueError, KeyError):
            return None

    def worker_alive(self) -> bool:
        pid = self.pid()
        return pid is not None and pid_alive(pid)

    def acquire_worker_lock(self, *, timeout: float = 0.0) -> WorkerLock | None:
        """Take the run's one-worker lock, trying for up to ``timeout`` s; None while another holds it.

        The caller holds it until it closes it, or hands it to the worker it starts (the ``local``
        provider does); a worker started by hand takes it itself. The pid it holds is cleared until
        the holder records one (:meth:`WorkerLock.record`).
        """
        self.path.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while not _try_lock(fd):
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return None
                time.sleep(0.02)
        except BaseException:
            os.close(fd)
            raise
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        return WorkerLock(self.lock_file, fd)

    def adopt_worker_lock(self, fd: int) -> WorkerLock | None:
        """The lock a starting worker inherited as descriptor ``fd``, once checked to be this run's
        lock file and held by it; None otherwise (the worker then takes the lock itself)."""
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(self.lock_file))
        except OSError:
            return None
        if not same or not _try_lock(fd):
            return None
        os.set_inheritable(fd, False)  # programs the worker starts do not keep the run locked
        return WorkerLock(self.lock_file, fd)

    def lock_holder(self) -> int | None:
        """The pid the holder of ``worker.lock`` recorded (meaningful only while it is held)."""
        try:
            first = self.lock_file.read_text(encoding="ascii").split("\n", 1)[0].strip()
        except (OSError, UnicodeDecodeError):
            return None
        return int(first) if first.isdigit() else None

    def remove_stale_scratch(self, lock: WorkerLock) -> list[Path]:
        """Remove what writers killed mid-write left behind; returns the paths removed.

        Only the holder of the run's lock may do this (``lock``), so no worker is writing; even so a
        scratch name whose writer pid is alive (another process cancelling, this one) is kept.
        """
        if lock.closed or lock.path != self.lock_file:
            raise ValueError(f"{self.path}: removing scratch files needs this run's worker lock, held")
        removed: list[Path] = []
        for folder in (self.path, self.checkpoints_dir):
            try:
                entries = list(folder.iterdir())
            except FileNotFoundError:
                continue
            for entry in entries:
                pid = _scratch_writer(entry.name)
                if pid is None or pid_alive(pid):
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        entry.unlink()
                removed.append(entry)
        return removed

    def request_cancel(self) -> None:
        self.cancel_file.touch()
        pid = self.pid()
        if pid is not None and pid_alive(pid):
            # The worker stops at the next step boundary on SIGTERM and keeps its last checkpoint.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def cancel_requested(self) -> bool:
        return self.cancel_file.exists()

    # -- checkpoints ------------------------------------------------------------------------
    def checkpoint_dirs(self) -> list[Path]:
        """Complete checkpoints, oldest first (a checkpoint is complete once renamed into place)."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = [
            p
            for p in self.checkpoints_dir.iterdir()
            if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and p.name[len(CHECKPOINT_PREFIX) :].isdigit()
        ]
        return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))

    def last_checkpoint(self) -> Path | None:
        dirs = self.checkpoint_dirs()
        return dirs[-1] if dirs else None

    def new_checkpoint_tmp(self, step: int) -> Path:
        """A scratch folder to fill; :meth:`commit_checkpoint` makes it a complete checkpoint."""
        tmp = self.checkpoints_dir / f".tmp-{CHECKPOINT_PREFIX}{step}-{os.getpid()}-{time.time_ns()}"
        tmp.mkdir(parents=True)
        return tmp

    def commit_checkpoint(self, tmp: Path, step: int, keep: int = 2) -> Path:
        final = self.checkpoints_dir / f"{CHECKPOINT_PREFIX}{step}"
        if final.exists():
            shutil.rmtree(final)
        _fsync_tree(tmp)
        os.replace(tmp, final)
        for old in self.checkpoint_dirs()[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    # -- result -----------------------------------------------------------------------------
    def write_result(self, data: dict[str, Any]) -> None:
        write_json_atomic(self.result_file, data)

    def result(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.result_file.read_text())
            return data
        except FileNotFoundError:
            return None


def _fsync_tree(folder: Path) -> None:
    for item in folder.rglob("*"):
        if item.is_file():
            fd = os.open(item, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
