"""One job at a time on each device: the queue a local worker waits in before it loads its model.

Two local jobs started on one GPU would both load a model, and one of them (or both) would run out of
memory. So a worker first takes a lock per device it will use, ``ANYTUNE_HOME/devices/<key>.lock``
(keys ``cuda-0``, ``cuda-1``, ``mps``, ``cpu``), all of them before it loads anything and in one
fixed order (sorted keys), so that two multi-device jobs never hold one device each while waiting for
the other's. While it waits the job is ``queued`` with raw status ``waiting_for_device`` and a
message that names the holder: "waiting for cuda:0 (held by run-…, pid N)". Waiters are served in
the order they arrived: each holds a ticket in ``<key>.queue/`` and tries the lock only once no
older live ticket is left.

The locks and tickets are OS file locks (``flock``; ``msvcrt`` on Windows): the OS drops them when
their process exits by any means, SIGKILL included, so a killed worker never leaves a device taken
nor a ticket that blocks the queue (a dead ticket is removed by the next waiter that looks).

Which jobs queue (``local.queue``, else the provider setting ``queue`` / ``ANYTUNE_LOCAL_QUEUE``):
``auto`` (the default) on cuda and mps, not on the CPU, which jobs share (each slower, none failing);
``device`` on every device, the CPU included; ``none`` never.

A CUDA key names the physical device: with ``CUDA_VISIBLE_DEVICES=2`` a job's ``cuda:0`` is
``cuda-2``, so jobs that see different subsets of the GPUs still queue on the ones they share.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, get_args

from anytune._home import anytune_home
from anytune._spec import LocalOptions
from anytune._types import JobStatus
from anytune.errors import ConfigError
from anytune.local_backend.devices import device_kind
from anytune.local_backend.rundir import RunDir, pid_alive, try_lock

__all__ = [
    "LOCKS_ENV",
    "QUEUE_ENV",
    "WAITING",
    "HeldDevices",
    "Holder",
    "QueueMode",
    "acquire",
    "device_keys",
    "hold_devices",
    "label",
    "queues",
]

QueueMode = Literal["auto", "device", "none"]
#: The queue mode the provider hands its worker (its ``queue`` setting, ``ANYTUNE_LOCAL_QUEUE``).
QUEUE_ENV = "ANYTUNE_LOCAL_QUEUE"
#: The folder of the device locks the provider hands its worker (``ANYTUNE_HOME/devices``).
LOCKS_ENV = "ANYTUNE_DEVICE_LOCKS"
#: The raw status of a job waiting for a device.
WAITING = "waiting_for_device"
#: How often a waiter looks again (and notices a cancel).
POLL_S = 0.25
#: The run-directory file in which rank 0 of a multi-process job tells the other ranks it holds the
#: devices: ``{"launcher": pid}``, the pid of the launcher they share (a file left by an earlier
#: launch names another).
_GRANTED = "devices.json"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def queues(mode: str, kind: str) -> bool:
    """Whether a job on device ``kind`` (cpu, cuda, mps) waits for it under queue ``mode``."""
    if mode not in get_args(QueueMode):
        raise ConfigError(
            f"unknown queue mode {mode!r}: use one of {', '.join(get_args(QueueMode))}", field="local.queue"
        )
    return mode == "device" or (mode == "auto" and kind != "cpu")


def device_keys(kind: str, count: int = 1, visible: str | None = None) -> list[str]:
    """The lock keys of a job on ``count`` devices of ``kind``, sorted (the order they are taken in).

    ``visible`` is ``CUDA_VISIBLE_DEVICES``: the job's ``cuda:i`` is its i-th entry (an index or a
    GPU UUID), so that the key names the physical device.
    """
    if kind != "cuda":
        return [kind]
    listed = [v.strip() for v in visible.split(",")] if visible else []
    ids = [listed[i] if i < len(listed) and listed[i] else str(i) for i in range(count)]
    return sorted({f"cuda-{_UNSAFE.sub('_', d)}" for d in ids})


def label(key: str) -> str:
    """How a key reads in a message: ``cuda-0`` is ``cuda:0``."""
    return key.replace("-", ":", 1)


@dataclass(frozen=True)
class Holder:
    """Who holds a device, as its lock file says (the holder writes it once it has the lock)."""

    run: str | None = None
    pid: int | None = None

    def __str__(self) -> str:
        parts = [p for p in (self.run, f"pid {self.pid}" if self.pid else None) if p]
        return ", ".join(parts) or "another job"


def _read_holder(path: Path) -> Holder | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    pid = data.get("pid")
    run = data.get("run")
    return Holder(run=str(run) if run else None, pid=pid if isinstance(pid, int) else None)


class HeldDevices:
    """The device locks a worker holds (none when its job does not queue). :meth:`close` lets them go;
    so does the worker's exit, whatever ends it."""

    def __init__(self, keys: Sequence[str] = (), fds: Sequence[int] = (), waited: float = 0.0) -> None:
        self.keys = tuple(keys)
        self.waited = waited
        self._fds = list(fds)

    def __repr__(self) -> str:
        return f"HeldDevices({list(self.keys)!r}, {'held' if self._fds else 'none'})"

    def __enter__(self) -> HeldDevices:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def _open_locked(path: Path, *, create: bool = True) -> int | None:
    """``path`` opened and locked by this process, or None while another process holds it."""
    fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    if try_lock(fd):
        return fd
    os.close(fd)
    return None


class _Ticket:
    """A place in one device's line: a locked file named by arrival time, in ``<key>.queue/``."""

    def __init__(self, folder: Path, arrived: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.name = f"{arrived:020d}-{os.getpid()}"
        if sys.platform == "win32":
            # There an open file can be neither renamed nor removed by another waiter.
            fd = _open_locked(folder / self.name)
        else:
            # Locked before it has its name: a waiter never takes a ticket being made for a dead one's.
            scratch = folder / f".new-{self.name}"
            fd = _open_locked(scratch)
            if fd is not None:
                os.replace(scratch, folder / self.name)
        if fd is None:  # nobody else knows this name
            raise OSError(f"could not lock the queue ticket {folder / self.name}")
        self.fd: int | None = fd

    def ahead(self) -> int:
        """Live tickets older than this one; dead ones (their process exited) are removed on the way."""
        count = 0
        for entry in sorted(self.folder.iterdir()):
            if entry.name >= self.name or entry.name.startswith("."):
                continue
            try:
                fd = _open_locked(entry, create=False)
            except OSError:
                continue  # removed while we looked
            if fd is None:
                count += 1
                continue
            with contextlib.suppress(OSError):
                entry.unlink()
            os.close(fd)
        return count

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                (self.folder / self.name).unlink()
            os.close(fd)


#: Called while a device is busy: the device key, its holder, and how many waiters are ahead.
OnWait = Callable[[str, Holder | None, int], None]


def acquire(
    folder: Path,
    keys: Sequence[str],
    *,
    owner: str,
    cancelled: Callable[[], bool],
    on_wait: OnWait | None = None,
    arrived: int | None = None,
    poll: float = POLL_S,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> HeldDevices | None:
    """Take the locks of ``keys`` under ``folder``, in sorted order, waiting in line for each.

    Args:
        folder: where the lock files are (``ANYTUNE_HOME/devices``).
        keys: the devices (:func:`device_keys`).
        owner: what the lock file names as holder (the run id).
        cancelled: asked between looks; True stops the wait, and nothing stays held.
        on_wait: told each look that finds a device busy.
        arrived: the place in line, as ``time.time_ns()`` when the job asked (default: now).

    Returns:
        The held locks, or None when ``cancelled`` said so first.
    """
    folder.mkdir(parents=True, exist_ok=True)
    started = clock()
    held: list[int] = []
    try:
        for key in sorted(set(keys)):
            fd = _wait_for(folder, key, owner, arrived or time.time_ns(), cancelled, on_wait, poll, sleep)
            if fd is None:
                return None
            held.append(fd)
        taken, held = held, []
        return HeldDevices(sorted(set(keys)), taken, waited=clock() - started)
    finally:
        for fd in held:  # given up (cancelled, or an error): let go of what was taken
            os.close(fd)


def _wait_for(
    folder: Path,
    key: str,
    owner: str,
    arrived: int,
    cancelled: Callable[[], bool],
    on_wait: OnWait | None,
    poll: float,
    sleep: Callable[[float], object],
) -> int | None:
    path = folder / f"{key}.lock"
    ticket = _Ticket(folder / f"{key}.queue", arrived)
    try:
        while True:
            ahead = ticket.ahead()
            fd = _open_locked(path) if ahead == 0 else None
            if fd is not None:
                data = json.dumps({"run": owner, "pid": os.getpid()}).encode()
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, data)
                return fd
            if cancelled():
                return None
            if on_wait is not None:
                on_wait(key, _read_holder(path), ahead)
            sleep(poll)
    finally:
        ticket.close()


# -- the worker's side ------------------------------------------------------------------------------


class _Reporter:
    """Writes the waiting job's status: one status event, then a log line when the holder changes."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.last: tuple[str, Holder | None] | None = None

    def __call__(self, key: str, holder: Holder | None, ahead: int) -> None:
        if self.last == (key, holder):
            return
        queue = f"; {ahead} more job{'s' if ahead != 1 else ''} ahead in line" if ahead > 1 else ""
        message = f"waiting for {label(key)} (held by {holder or 'another job'}{queue})"
        wait = {"device": label(key), "held_by": holder.run if holder else None, "ahead": ahead}
        if self.last is None:
            self.run.set_status(JobStatus.QUEUED, raw=WAITING, message=message, device_wait=wait)
        else:
            self.run.update(device_wait=wait)
            self.run.emit("log", message)
        self.last = (key, holder)


def hold_devices(run: RunDir, *, env: Mapping[str, str] | None = None) -> HeldDevices | None:
    """Wait until the devices of ``run``'s job are free and hold them (see the module docstring).

    Rank 0 of a multi-process job (``torch.distributed.run``) takes every device of the job; the
    other ranks wait for its word before they start, so that no rank sits in a rendezvous that could
    time out while the job is in line.

    Returns:
        The held locks (none when the job does not queue), or None when the job was cancelled while
        it waited: its status then says ``cancelled`` and no device was taken.
    """
    env = os.environ if env is None else env
    options = run.spec().local or LocalOptions()
    mode = options.queue or env.get(QUEUE_ENV) or "auto"
    kind = device_kind(options.device) if mode != "none" else "cpu"
    if not queues(mode, kind):
        return HeldDevices()
    if int(env.get("LOCAL_RANK", "0")) != 0:
        return _follow_rank_zero(run)
    keys = device_keys(kind, options.num_devices, env.get("CUDA_VISIBLE_DEVICES"))
    folder = Path(env.get(LOCKS_ENV) or anytune_home(env) / "devices")
    reporter = _Reporter(run)
    held = acquire(folder, keys, owner=run.id, arrived=_launched(run), cancelled=run.cancel_requested, on_wait=reporter)
    if held is None:
        where = label(reporter.last[0]) if reporter.last else ", ".join(label(k) for k in keys)
        run.set_status(
            JobStatus.CANCELLED, raw="cancelled", message=f"job cancelled while waiting for {where}", device_wait=None
        )
        return None
    if reporter.last is not None:
        names = ", ".join(label(k) for k in held.keys)
        run.set_status(
            JobStatus.QUEUED,
            raw="queued",
            message=f"{names} free after {held.waited:.0f} s in line: starting",
            device_wait=None,
        )
    if int(env.get("WORLD_SIZE", "1")) > 1:
        (run.path / _GRANTED).write_text(json.dumps({"launcher": os.getppid()}), encoding="utf-8")
    return held


def _launched(run: RunDir) -> int | None:
    """When the provider started this worker (``launch.json``), so that jobs queue in the order they
    were submitted or resumed, not in the order their interpreters happened to start."""
    try:
        stamp = json.loads((run.path / "launch.json").read_text(encoding="utf-8"))["launched_at"]
        return int(datetime.fromisoformat(stamp).timestamp() * 1e9)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _follow_rank_zero(run: RunDir, poll: float = POLL_S) -> HeldDevices | None:
    """A rank other than 0: wait until rank 0 holds the devices (None: the job ended meanwhile)."""
    launcher = os.getppid()
    while True:
        with contextlib.suppress(OSError, ValueError):
            if json.loads((run.path / _GRANTED).read_text(encoding="utf-8")).get("launcher") == launcher:
                return HeldDevices()
        if JobStatus(run.status().get("status", "queued")).is_terminal or not pid_alive(launcher):
            return None
        time.sleep(poll)
