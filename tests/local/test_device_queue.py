"""The device queue: local jobs that need the same device run one after another.

The lock module is tested on its own (keys, modes, order, a killed holder); the jobs are tested end
to end with the real worker module under a stand-in interpreter whose trainer runs until cancelled
(no torch), on the CPU with ``local.queue = "device"`` (a GPU job queues the same way by default).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from anytune import JobSpec, JobStatus
from anytune.errors import ConfigError
from anytune.local_backend.devicequeue import Holder, acquire, device_keys, hold_devices, label, queues
from anytune.local_backend.rundir import RunDir, pid_alive
from anytune.providers.local import LocalProvider, LocalSettings
from tests.clitools import run_cli
from tests.conftest import chat_example, write_jsonl

WAIT = 60.0

# The real worker module, with a trainer that says it runs and stops when cancelled (a minute at most).
FAKE_PYTHON = """#!{python}
import runpy, sys, time, types

def run_training(run, resume=False, node_rank=0):
    from anytune._types import JobStatus
    run.set_status(JobStatus.RUNNING, raw="training", message="training", step=1, total_steps=10)
    deadline = time.monotonic() + 60
    while not run.cancel_requested() and time.monotonic() < deadline:
        time.sleep(0.02)
    run.set_status(JobStatus.CANCELLED, raw="cancelled", message="job cancelled")

fake = types.ModuleType("anytune.local_backend.train")
fake.run_training = run_training
sys.modules[fake.__name__] = fake
sys.argv = [sys.argv[2], *sys.argv[3:]]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""

# A process that takes a device lock (or waits in line for it) and then sleeps until killed.
HOLDER = """
import sys, time
from pathlib import Path
from anytune.local_backend.devicequeue import acquire
held = acquire(Path(sys.argv[1]), [sys.argv[2]], owner=sys.argv[3], cancelled=lambda: False, poll=0.02)
print("held", flush=True)
time.sleep(120)
"""


def poll(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


# -- keys and modes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "count", "visible", "keys"),
    [
        ("cuda", 1, None, ["cuda-0"]),
        ("cuda", 2, None, ["cuda-0", "cuda-1"]),
        ("cuda", 1, "3,1", ["cuda-3"]),  # the job's cuda:0 is the physical GPU 3
        ("cuda", 2, "3,1", ["cuda-1", "cuda-3"]),  # taken in sorted order, whatever the job calls them
        ("cuda", 1, "GPU-8a1f/x", ["cuda-GPU-8a1f_x"]),
        ("mps", 1, None, ["mps"]),
        ("cpu", 4, None, ["cpu"]),
    ],
)
def test_device_keys_name_the_physical_devices_in_a_fixed_order(
    kind: str, count: int, visible: str | None, keys: list[str]
) -> None:
    assert device_keys(kind, count, visible) == keys


@pytest.mark.parametrize(
    ("mode", "kind", "waits"),
    [
        ("auto", "cuda", True),
        ("auto", "mps", True),
        ("auto", "cpu", False),  # jobs share the CPU: slower, not out of memory
        ("device", "cpu", True),
        ("none", "cuda", False),
    ],
)
def test_which_jobs_queue(mode: str, kind: str, waits: bool) -> None:
    assert queues(mode, kind) is waits


def test_an_unknown_queue_mode_names_the_field() -> None:
    with pytest.raises(ConfigError, match="unknown queue mode 'fifo'") as info:
        queues("fifo", "cuda")
    assert info.value.field == "local.queue"
    assert label("cuda-0") == "cuda:0"


def test_the_spec_refuses_an_unknown_queue_mode(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [chat_example(0)])
    with pytest.raises(ValueError, match="queue"):
        JobSpec(base_model="tiny", training_file=train, local={"queue": "later"})  # type: ignore[arg-type]


# -- the locks ---------------------------------------------------------------------------------------


def test_a_busy_device_makes_the_next_one_wait_and_names_the_holder(tmp_path: Path) -> None:
    first = acquire(tmp_path, ["cuda-0"], owner="run-a", cancelled=lambda: False)
    assert first is not None and first.keys == ("cuda-0",)
    seen: list[tuple[str, Holder | None, int]] = []
    looks = iter(range(3))
    second = acquire(
        tmp_path,
        ["cuda-0"],
        owner="run-b",
        cancelled=lambda: next(looks, 99) >= 2,
        on_wait=lambda *args: seen.append(args),
        poll=0.0,
    )
    assert second is None  # cancelled while it waited: nothing held
    assert seen[0] == ("cuda-0", Holder(run="run-a", pid=os.getpid()), 0)
    assert str(seen[0][1]) == f"run-a, pid {os.getpid()}"
    first.close()
    third = acquire(tmp_path, ["cuda-0"], owner="run-c", cancelled=lambda: True)
    assert third is not None  # free again: taken at the first look, a cancel is not even asked
    third.close()


def test_a_wait_that_gives_up_holds_none_of_the_devices_it_took(tmp_path: Path) -> None:
    busy = acquire(tmp_path, ["cuda-1"], owner="run-a", cancelled=lambda: False)
    assert busy is not None
    assert acquire(tmp_path, ["cuda-1", "cuda-0"], owner="run-b", cancelled=lambda: True, poll=0.0) is None
    # cuda-0, taken first (sorted order), was let go when the wait for cuda-1 ended.
    other = acquire(tmp_path, ["cuda-0"], owner="run-c", cancelled=lambda: True)
    assert other is not None
    other.close()
    busy.close()


def test_waiters_are_served_in_the_order_they_arrived(tmp_path: Path) -> None:
    holder = acquire(tmp_path, ["cuda-0"], owner="run-a", cancelled=lambda: False)
    assert holder is not None
    order: list[str] = []
    done = threading.Event()

    def wait(owner: str) -> None:
        held = acquire(tmp_path, ["cuda-0"], owner=owner, cancelled=done.is_set, poll=0.01)
        if held is not None:
            order.append(owner)
            time.sleep(0.05)
            held.close()

    threads = []
    for owner in ("run-b", "run-c", "run-d"):
        threads.append(threading.Thread(target=wait, args=(owner,)))
        threads[-1].start()
        time.sleep(0.05)  # each in line before the next arrives
    holder.close()
    for thread in threads:
        thread.join(timeout=WAIT)
    done.set()
    assert order == ["run-b", "run-c", "run-d"]


def test_a_killed_holder_or_waiter_leaves_nothing_behind(tmp_path: Path) -> None:
    def start(owner: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(tmp_path), "cuda-0", owner],
            stdout=subprocess.PIPE,
            text=True,
        )

    holder = start("run-a")
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    waiter = start("run-b")  # in line behind run-a, with a ticket
    seen: list[Holder | None] = []
    looks = iter(range(10**6))
    blocked = acquire(
        tmp_path,
        ["cuda-0"],
        owner="run-c",
        cancelled=lambda: next(looks) > 20,
        on_wait=lambda key, who, ahead: seen.append(who),
        poll=0.02,
    )
    assert blocked is None and seen[-1] is not None and seen[-1].run == "run-a"
    for proc in (holder, waiter):
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # The OS let go of the lock and of the dead waiter's ticket: the device is free at once.
    held = acquire(tmp_path, ["cuda-0"], owner="run-c", cancelled=lambda: True)
    assert held is not None
    held.close()
    assert not [p for p in (tmp_path / "cuda-0.queue").iterdir()]


# -- jobs --------------------------------------------------------------------------------------------


@pytest.fixture
def fake_python(tmp_path: Path) -> str:
    path = tmp_path / "fake-python"
    path.write_text(FAKE_PYTHON.format(python=sys.executable))
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def made(tmp_path: Path) -> Iterator[list[RunDir]]:
    """Runs a test made: their workers are stopped at the end, whatever happened."""
    runs: list[RunDir] = []
    yield runs
    for run in runs:
        with contextlib.suppress(OSError):
            run.cancel_file.touch()
        pid = run.pid()
        if pid is not None and pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    for run in runs:
        with contextlib.suppress(AssertionError):
            poll(lambda run=run: not run.worker_alive(), timeout=20)


def _submit(provider: LocalProvider, tmp_path: Path, key: str, made: list[RunDir], **local: str) -> RunDir:
    train = write_jsonl(tmp_path / f"{key}.jsonl", [chat_example(i) for i in range(2)])
    spec = JobSpec(base_model="tiny", training_file=train, local={"device": "cpu", **local})  # type: ignore[arg-type]
    record = provider.submit(spec, idempotency_key=key)
    run = RunDir(provider.runs_dir / record.id)
    made.append(run)
    return run


def _status(provider: LocalProvider, run: RunDir) -> tuple[JobStatus, str]:
    record = provider.get(run.id)
    return record.status, record.raw_status


def test_jobs_on_one_device_run_one_after_another_and_a_queued_one_cancels_at_once(
    tmp_path: Path, fake_python: str, made: list[RunDir], capsys: pytest.CaptureFixture[str]
) -> None:
    provider = LocalProvider(LocalSettings(python=fake_python))
    first = _submit(provider, tmp_path, "first", made, queue="device")
    poll(lambda: _status(provider, first)[0] is JobStatus.RUNNING)
    # The provider setting queues the second job (its spec does not say); the third says so itself.
    second = _submit(LocalProvider(LocalSettings(python=fake_python, queue="device")), tmp_path, "second", made)
    third = _submit(provider, tmp_path, "third", made, queue="device")
    for run in (second, third):
        poll(lambda run=run: _status(provider, run) == (JobStatus.QUEUED, "waiting_for_device"))
    messages = [e.message for e in provider.events(second.id)]
    assert f"waiting for cpu (held by {first.id}, pid {first.pid()})" in messages
    shown = run_cli(capsys, "jobs", "get", f"local:{third.id}")
    assert "queued (waiting_for_device)" in shown.out

    # Cancelled while queued: it ends at once, and never held the device.
    began = time.monotonic()
    provider.cancel(second.id)
    poll(lambda: provider.get(second.id).done and not second.worker_alive())
    assert time.monotonic() - began < 10
    assert _status(provider, second) == (JobStatus.CANCELLED, "cancelled")
    assert "job cancelled while waiting for cpu" in [e.message for e in provider.events(second.id)]
    assert "training" not in [e.message for e in provider.events(second.id)]
    assert _status(provider, first)[0] is JobStatus.RUNNING

    # The first ends: the third, next in line, gets the device and runs.
    provider.cancel(first.id)
    poll(lambda: _status(provider, third)[0] is JobStatus.RUNNING)
    events = [e.message for e in provider.events(third.id)]
    assert any(m.startswith("cpu free after") for m in events), events
    assert provider.get(third.id).raw.get("device_wait") is None


def test_jobs_that_do_not_queue_start_together(tmp_path: Path, fake_python: str, made: list[RunDir]) -> None:
    # The default on the CPU (auto), and "none" anywhere: no waiting.
    provider = LocalProvider(LocalSettings(python=fake_python))
    runs = [_submit(provider, tmp_path, "a", made), _submit(provider, tmp_path, "b", made, queue="none")]
    for run in runs:
        poll(lambda run=run: _status(provider, run)[0] is JobStatus.RUNNING)
    assert not (provider.home / "devices").exists()


# -- several processes of one job (torch.distributed.run) -------------------------------------------


def _run(tmp_path: Path, **local: object) -> RunDir:
    train = write_jsonl(tmp_path / "train.jsonl", [chat_example(0)])
    run = RunDir(tmp_path / "runs" / "run-0123456789abcdef")
    run.create(JobSpec(base_model="tiny", training_file=train, local=local), idempotency_key="k")  # type: ignore[arg-type]
    return run


def test_rank_zero_takes_every_device_and_the_other_ranks_wait_for_its_word(tmp_path: Path) -> None:
    run = _run(tmp_path, device="cpu", queue="device", num_devices=2)
    locks = tmp_path / "devices"
    env = {"ANYTUNE_DEVICE_LOCKS": str(locks), "WORLD_SIZE": "2"}
    other: list[object] = []
    waiting = threading.Thread(target=lambda: other.append(hold_devices(run, env={**env, "LOCAL_RANK": "1"})))
    waiting.start()
    time.sleep(0.3)
    assert waiting.is_alive()  # rank 1 does not start before rank 0 holds the devices
    held = hold_devices(run, env={**env, "LOCAL_RANK": "0"})
    waiting.join(timeout=WAIT)
    assert held is not None and held.keys == ("cpu",) and other and other[0] is not None
    assert acquire(locks, ["cpu"], owner="run-x", cancelled=lambda: True) is None  # taken for the job
    held.close()


def test_the_other_ranks_give_up_when_the_job_ends_in_line(tmp_path: Path) -> None:
    run = _run(tmp_path, device="cpu", queue="device", num_devices=2)
    run.set_status(JobStatus.CANCELLED, raw="cancelled", message="job cancelled while waiting for cpu")
    assert hold_devices(run, env={"WORLD_SIZE": "2", "LOCAL_RANK": "1"}) is None


def test_a_worker_started_by_hand_with_a_bad_queue_mode_fails_naming_the_field(tmp_path: Path) -> None:
    run = _run(tmp_path, device="cpu")
    with pytest.raises(ConfigError) as info:
        hold_devices(run, env={"ANYTUNE_LOCAL_QUEUE": "later"})
    assert info.value.field == "local.queue"
