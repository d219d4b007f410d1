"""Ranks never outlive their launcher: a rank whose parent died stops at once.

``torch.distributed.run`` starts each rank in a session of its own, so a signal to the launcher's
process group never reaches them, and once their process group is up the ranks talk to each other
directly: when the launcher is SIGKILLed (by a user, the OOM killer, or a scheduler ending the
provider's detached worker), nothing tells the ranks, and they would go on training with no one to
report to, holding the GPUs, while the run's lock (held by the launcher) is free for a ``resume``
that would start a second set of writers on the same run directory.

Two guards, installed first thing in each rank (:func:`guard`):

- Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills the rank when its parent dies,
  whatever the rank is doing (a blocked collective, a CUDA kernel, a held GIL). SIGKILL, not SIGTERM:
  a launcher that stops on purpose ends its ranks first (torchrun sends SIGTERM and waits), so this
  signal only ever comes after the launcher is gone, when a step boundary may never come (a peer may
  be dead, and collectives with it block for the process group's whole timeout). The run directory
  survives it as it survives any SIGKILL: files are written whole (scratch, then rename) and the next
  worker removes a killed writer's scratch.
- Everywhere: a daemon thread that checks ``os.getppid()`` every ``interval`` seconds and ends the
  process (``os._exit``) when the parent changed (an orphan is re-parented to init or a subreaper).

Both compare against the parent seen when the guard is installed (not against pid 1: in a container
the launcher may be pid 1). A launcher that died before that, in the rank's first fraction of a
second, leaves ranks that cannot start: torchrun's agent hosts the store their process group meets at.
The job's record then says what happened: with no live launcher and no final status the provider
reports ``worker_died``, and ``jobs resume`` continues from the last checkpoint.

Only ranks started by a launcher install the guard: a one-process worker is detached on purpose (it
outlives the process that created the job).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

__all__ = ["EXIT_ORPHANED", "guard", "set_parent_death_signal"]

#: The exit status of a rank that ended because its launcher died (the watchdog thread's way out).
EXIT_ORPHANED = 125
#: ``PR_SET_PDEATHSIG`` from ``<linux/prctl.h>``.
_PR_SET_PDEATHSIG = 1
#: How often the watchdog thread looks at the parent pid.
INTERVAL_S = 0.5


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies. False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _orphaned(parent: int) -> bool:
    return os.getppid() != parent


def _exit_orphaned(parent: int) -> None:
    with contextlib.suppress(Exception):
        print(
            f"anytune worker: pid {os.getpid()}: its launcher (pid {parent}) is gone; this rank stops now",
            file=sys.stderr,
            flush=True,
        )
    os._exit(EXIT_ORPHANED)


def guard(
    *, interval: float = INTERVAL_S, on_orphan: Callable[[int], None] = _exit_orphaned, death_signal: bool = True
) -> threading.Thread:
    """Make this process end when its parent dies (see the module docstring). Returns the watchdog thread.

    Args:
        interval: seconds between two looks at the parent pid.
        on_orphan: called with the old parent's pid once the parent is gone (default: a line on
            stderr, then ``os._exit(EXIT_ORPHANED)``); tests pass their own.
        death_signal: also ask the kernel for SIGKILL on the parent's death (Linux).
    """
    parent = os.getppid()
    if death_signal:
        set_parent_death_signal()
    # The parent may have died before prctl: then nothing would ever send the signal.
    if _orphaned(parent):
        on_orphan(parent)

    def watch() -> None:
        while not _orphaned(parent):
            time.sleep(interval)
        on_orphan(parent)

    thread = threading.Thread(target=watch, name="anytune-orphan-guard", daemon=True)
    thread.start()
    return thread
