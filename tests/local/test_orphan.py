"""The orphan guard on its own (no torch): a process whose parent dies ends within a second.

The parent here is a plain Python process standing in for ``torch.distributed.run``; the multi-rank
runs through the real launcher are in ``test_distributed_faults.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anytune.local_backend.orphan import guard, set_parent_death_signal

# The child installs the guard, reports its pid and then idles (or spins, holding the GIL off and on).
CHILD = """
import sys, time
from anytune.local_backend.orphan import guard
guard(interval=0.1, death_signal=sys.argv[1] == "1")
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""
# The parent starts the child, passes its pid on, and waits to be killed.
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == "ready"
print(child.pid, flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is gone for our purpose (its parent, the test's stand-in launcher, is dead: init reaps it).
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def _wait_gone(pid: int, timeout: float) -> float:
    start = time.monotonic()
    while not _gone(pid):
        if time.monotonic() - start > timeout:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"pid {pid} still running {timeout} s after its parent was killed")
        time.sleep(0.02)
    return time.monotonic() - start


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL of the stand-in launcher")
@pytest.mark.parametrize("death_signal", [True, False], ids=["prctl", "watchdog-thread"])
def test_a_guarded_process_ends_when_its_parent_is_sigkilled(death_signal: bool) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, CHILD, "1" if death_signal else "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not _gone(child)
        parent.kill()
        parent.wait()
        took = _wait_gone(child, timeout=5.0)
        # prctl: the kernel at once; the thread: within its 0.1 s interval (plus a loaded machine's delay).
        assert took < (1.0 if death_signal else 3.0), took
    finally:
        parent.kill()


def test_the_guard_calls_back_when_the_parent_is_not_the_one_it_saw(monkeypatch: pytest.MonkeyPatch) -> None:
    parents = iter([4242, 4242, 1])
    monkeypatch.setattr(os, "getppid", lambda: next(parents, 1))
    seen: list[int] = []
    thread = guard(interval=0.01, on_orphan=seen.append, death_signal=False)
    thread.join(timeout=5)
    assert seen == [4242] and not thread.is_alive()


def test_the_death_signal_is_linux_only() -> None:
    # Applied to the test process itself: harmless, its parent (pytest's launcher) outlives it.
    assert set_parent_death_signal(0) is sys.platform.startswith("linux")
