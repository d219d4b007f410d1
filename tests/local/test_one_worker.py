"""One worker per local run: the run directory's lock, concurrent starts, and what killed writers leave.

Most tests run the real worker module (lock, pid, signals, scratch cleanup) under a stand-in
interpreter whose trainer only waits for a cancel, so a worker starts in about a second and never
needs torch. The last test does the same with the real trainer and is marked slow.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from anytune import InvalidRequestError, JobRecord, JobSpec, JobStatus
from anytune.local_backend import rundir
from anytune.local_backend.rundir import RunDir, pid_alive
from anytune.providers.local import LocalProvider, LocalSettings
from tests.clitools import run_cli
from tests.conftest import chat_example, write_jsonl

WAIT = 60.0
START_LINE = "anytune worker: pid "

# A stand-in for the interpreter: the real worker module, with a trainer that runs until cancelled
# (or for a minute at most, so that a failed test never leaves it behind).
FAKE_PYTHON = """#!{python}
import runpy, sys, time, types

def run_training(run, resume=False, node_rank=0):
    from anytune._types import JobStatus
    run.set_status(JobStatus.RUNNING, raw="running", message="waiting for a cancel", step=0, total_steps=10**6)
    deadline = time.monotonic() + 60
    while not run.cancel_requested() and time.monotonic() < deadline:
        time.sleep(0.02)
    run.set_status(JobStatus.CANCELLED, raw="cancelled", message="job cancelled")
    time.sleep(1.0)  # a worker takes a moment to exit after its final word (torch.distributed.run more)

fake = types.ModuleType("anytune.local_backend.train")
fake.run_training = run_training
sys.modules[fake.__name__] = fake
assert sys.argv[1] == "-m", sys.argv
sys.argv = [sys.argv[2], *sys.argv[3:]]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""

# One process that resumes a run once a go-file appears (so that all of them call at once).
RESUMER = """
import json, sys, time
from pathlib import Path
from anytune.errors import AnytuneError
from anytune.providers.local import LocalProvider, LocalSettings
go, python, job_id = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
provider = LocalProvider(LocalSettings(python=python))
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
try:
    print(json.dumps({"ok": provider.resume(job_id).status.value}))
except AnytuneError as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
"""

# A writer of the run directory that stops in the middle of its writes: a checkpoint being filled,
# the adapter and merged-model folders, and a status.json replacement that never lands.
WRITER = """
import os, sys, time
from pathlib import Path
from anytune.local_backend import rundir
run = rundir.RunDir(Path(sys.argv[1]))
(run.new_checkpoint_tmp(3) / "optimizer.pt").write_bytes(b"x")
for prefix in (".adapter-tmp-", ".merged-tmp-"):  # as train.py names them
    folder = run.path / f"{prefix}{os.getpid()}"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(b"x")
def hang(*args):
    print("writing", flush=True)
    time.sleep(120)
os.replace = hang
rundir.write_json_atomic(run.status_file, {"status": "running"})
"""


# -- helpers ------------------------------------------------------------------------------------------


@pytest.fixture
def fake_python(tmp_path: Path) -> str:
    path = tmp_path / "fake-python"
    path.write_text(FAKE_PYTHON.format(python=sys.executable))
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def provider(fake_python: str) -> LocalProvider:
    return LocalProvider(LocalSettings(python=fake_python))


@pytest.fixture
def spec(tmp_path: Path) -> JobSpec:
    train = write_jsonl(tmp_path / "train.jsonl", [chat_example(i) for i in range(4)])
    return JobSpec(base_model="tiny", training_file=train, lora={"r": 4})  # type: ignore[arg-type]


def worker_pids(run: RunDir) -> list[int]:
    """Live worker processes of ``run`` (Linux: by command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "anytune.local_backend.worker" in cmdline and str(run.path) in cmdline and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def starts(run: RunDir) -> int:
    """How many workers got past the lock (each logs one start line)."""
    return run.log_file.read_text(errors="replace").count(START_LINE) if run.log_file.exists() else 0


def poll(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.fixture
def runs() -> Iterator[list[RunDir]]:
    """Runs a test made: their workers are cancelled at the end, whatever happened."""
    made: list[RunDir] = []
    yield made
    for run in made:
        with contextlib.suppress(OSError):
            run.cancel_file.touch()
        for pid in worker_pids(run):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(AssertionError):
            poll(lambda run=run: not worker_pids(run), timeout=20)


def died_run(provider: LocalProvider, spec: JobSpec, runs: list[RunDir], key: str = "k") -> RunDir:
    """A run whose worker died: what `resume` is for."""
    run = RunDir(provider.runs_dir / provider.job_id_for(key))
    run.create(spec, idempotency_key=key)
    run.set_status(JobStatus.RUNNING, step=4, total_steps=10)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run.write_pid(dead.pid)
    runs.append(run)
    assert provider.get(run.id).error is not None  # worker_died
    return run


def running(provider: LocalProvider, run: RunDir) -> JobRecord:
    poll(lambda: provider.get(run.id).status is JobStatus.RUNNING or provider.get(run.id).done)
    record = provider.get(run.id)
    assert record.status is JobStatus.RUNNING, run.log_file.read_text(errors="replace")
    return record


def cancel_and_wait(provider: LocalProvider, run: RunDir) -> None:
    provider.cancel(run.id)
    poll(lambda: provider.get(run.id).done and not worker_pids(run))
    assert provider.get(run.id).status is JobStatus.CANCELLED


needs_proc = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="counts processes through /proc")


# -- the lock -----------------------------------------------------------------------------------------


def race_resumes(tmp_path: Path, python: str, run_id: str, count: int = 4) -> list[dict[str, Any]]:
    """``count`` processes resume ``run_id`` at the same moment; their answers, as JSON."""
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RESUMER, str(go), python, run_id],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    answers = []
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        go.touch()
        for proc in procs:
            out, err = proc.communicate(timeout=WAIT)
            assert proc.returncode == 0, err
            answers.append(json.loads(out))
    finally:
        for proc in procs:
            proc.kill()
            proc.communicate()
    return answers


def test_the_lock_admits_one_holder_and_names_its_pid(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run-1")
    first = run.acquire_worker_lock()
    assert first is not None
    first.record(4242)
    assert run.acquire_worker_lock() is None  # another open file, even in this process
    assert run.acquire_worker_lock(timeout=0.1) is None
    assert run.lock_holder() == 4242
    first.close()
    second = run.acquire_worker_lock()
    assert second is not None and run.lock_holder() is None  # a new holder starts with no pid
    second.close()
    assert first.closed and second.closed


def test_a_sigkilled_holder_leaves_no_lock_behind(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run-1")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, time\nfrom pathlib import Path\nfrom anytune.local_backend.rundir import RunDir\n"
            "lock = RunDir(Path(sys.argv[1])).acquire_worker_lock()\nlock.record(os.getpid())\n"
            "print('held', flush=True)\ntime.sleep(120)\n",
            str(run.path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert run.acquire_worker_lock() is None and run.lock_holder() == holder.pid
        holder.kill()
        holder.wait()
        lock = run.acquire_worker_lock()
        assert lock is not None, "the OS releases the lock of a killed holder"
        lock.close()
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_removing_scratch_needs_the_runs_lock_held(tmp_path: Path) -> None:
    run, other = RunDir(tmp_path / "run-1"), RunDir(tmp_path / "run-2")
    lock = other.acquire_worker_lock()
    assert lock is not None
    with pytest.raises(ValueError, match="worker lock"):
        run.remove_stale_scratch(lock)
    lock.close()
    with pytest.raises(ValueError, match="worker lock"):
        other.remove_stale_scratch(lock)


def test_scratch_names_are_the_ones_the_writers_use() -> None:
    found = importlib.util.find_spec("anytune.local_backend.train")
    assert found is not None and found.origin is not None
    source = Path(found.origin).read_text(encoding="utf-8")  # read, not imported: no torch needed
    for prefix, name in ((rundir.ADAPTER_TMP_PREFIX, "ADAPTER"), (rundir.MERGED_TMP_PREFIX, "MERGED")):
        assert prefix + "{os.getpid()}" in source or f"{name}_TMP_PREFIX" in source, prefix
    assert rundir._scratch_writer(".tmp-step-12-345-1700000000000000000") == 345
    assert rundir._scratch_writer(".adapter-tmp-77") == 77 and rundir._scratch_writer(".merged-tmp-78") == 78
    assert rundir._scratch_writer(".status.json.99.tmp") == 99
    for name in ("step-3", "adapter", "status.json", ".adapter-tmp-x", "worker.lock", ".hidden"):
        assert rundir._scratch_writer(name) is None, name


# -- a worker started by hand ---------------------------------------------------------------------------


def test_a_second_worker_exits_at_once_and_touches_nothing(spec: JobSpec, tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run-1")
    run.create(spec, idempotency_key="k")
    run.set_status(JobStatus.RUNNING, step=2)
    lock = run.acquire_worker_lock()
    assert lock is not None
    lock.record(os.getpid())
    run.write_pid(os.getpid())
    before = {p.name: p.read_bytes() for p in run.path.iterdir() if p.is_file()}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "anytune.local_backend.worker", str(run.path), "--resume"],
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
    finally:
        lock.close()
    assert proc.returncode == 3, proc.stderr
    assert f"is already running (pid {os.getpid()})" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert {p.name: p.read_bytes() for p in run.path.iterdir() if p.is_file()} == before


# -- through the provider ---------------------------------------------------------------------------------


@needs_proc
def test_concurrent_resumes_start_exactly_one_worker(
    provider: LocalProvider,
    spec: JobSpec,
    fake_python: str,
    tmp_path: Path,
    runs: list[RunDir],
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = died_run(provider, spec, runs)
    answers = race_resumes(tmp_path, fake_python, run.id)
    record = running(provider, run)
    started = [a for a in answers if "ok" in a]
    refused = [a for a in answers if "error" in a]
    assert len(started) == 1 and len(refused) == 3, answers
    worker = run.pid()
    assert worker_pids(run) == [worker] and starts(run) == 1, run.log_file.read_text()
    for answer in refused:
        assert answer["error"] == "InvalidRequestError"
        assert f"job {record.ref} is already running: its worker (pid {worker}) is still running" in answer["message"]
    # The one worker holds the run for its whole life: one more resume is refused the same way.
    with pytest.raises(InvalidRequestError, match=rf"already running: its worker \(pid {worker}\)"):
        provider.resume(run.id)
    # ... and the CLI says so on one line, with the exit status of a provider error.
    cli = run_cli(capsys, "jobs", "resume", record.ref)
    assert cli.code == 1 and "Traceback" not in cli.err, cli.err
    assert f"is already running: its worker (pid {worker}) is still running" in " ".join(cli.err.split())
    assert worker_pids(run) == [worker]
    cancel_and_wait(provider, run)


@needs_proc
def test_concurrent_submits_of_one_key_start_one_worker(
    provider: LocalProvider, spec: JobSpec, runs: list[RunDir]
) -> None:
    barrier = threading.Barrier(4)
    records: list[JobRecord] = []
    failures: list[BaseException] = []

    def submit() -> None:
        barrier.wait()
        try:
            records.append(provider.submit(spec, idempotency_key="same-key"))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    run = RunDir(provider.runs_dir / provider.job_id_for("same-key"))
    runs.append(run)
    assert not failures, failures
    assert len({r.id for r in records}) == 1 and len(records) == 4
    running(provider, run)
    assert worker_pids(run) == [run.pid()] and starts(run) == 1, run.log_file.read_text()
    cancel_and_wait(provider, run)


@needs_proc
def test_a_sigkilled_worker_does_not_block_the_next_resume(
    provider: LocalProvider, spec: JobSpec, runs: list[RunDir]
) -> None:
    run = died_run(provider, spec, runs)
    provider.resume(run.id)
    running(provider, run)
    first = run.pid()
    assert first is not None and run.acquire_worker_lock() is None  # held by the worker
    os.kill(first, signal.SIGKILL)
    poll(lambda: not pid_alive(first))
    record = provider.get(run.id)
    assert record.error is not None and record.error.code == "worker_died"

    provider.resume(run.id)  # no stale lock: the OS let go of it with the process
    running(provider, run)
    second = run.pid()
    assert second is not None and second != first
    assert worker_pids(run) == [second] and starts(run) == 1 + 1
    cancel_and_wait(provider, run)


@needs_proc
def test_resume_right_after_a_cancel_waits_for_the_old_worker_to_exit(
    provider: LocalProvider, spec: JobSpec, runs: list[RunDir]
) -> None:
    run = died_run(provider, spec, runs)
    provider.resume(run.id)
    running(provider, run)
    first = run.pid()
    provider.cancel(run.id)
    poll(lambda: provider.get(run.id).status is JobStatus.CANCELLED)
    assert first is not None and pid_alive(first)  # cancelled, and still exiting

    provider.resume(run.id)
    running(provider, run)
    assert not pid_alive(first) and worker_pids(run) == [run.pid()] and run.pid() != first
    cancel_and_wait(provider, run)


@needs_proc
def test_resume_removes_what_killed_writers_left_and_keeps_a_live_writers(
    provider: LocalProvider, spec: JobSpec, runs: list[RunDir]
) -> None:
    run = died_run(provider, spec, runs)
    (run.checkpoints_dir / "step-2").mkdir()
    (run.path / "notes.txt").write_text("mine")
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(run.path)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    killed, live = writers
    try:
        for writer in writers:
            assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
        killed.kill()
        killed.wait()

        def scratch(pid: int) -> list[Path]:
            return sorted(
                p
                for folder in (run.path, run.checkpoints_dir)
                for p in folder.iterdir()
                if p.name.endswith((f"-tmp-{pid}", f".{pid}.tmp"))
                or (p.name.startswith(".tmp-step-") and p.name.split("-")[3] == str(pid))
            )

        assert len(scratch(killed.pid)) == len(scratch(live.pid)) == 4
        kept = scratch(live.pid)

        provider.resume(run.id)
        assert scratch(killed.pid) == [], "the scratch of a killed writer is removed on resume"
        assert scratch(live.pid) == kept, "a live writer's scratch is never removed"
        assert (run.checkpoints_dir / "step-2").is_dir() and (run.path / "notes.txt").read_text() == "mine"
        running(provider, run)
        assert scratch(live.pid) == kept  # nor by the worker, which looks again when it starts
    finally:
        for writer in writers:
            writer.kill()
            writer.wait()
            if writer.stdout is not None:
                writer.stdout.close()
    cancel_and_wait(provider, run)


# -- with the real trainer ----------------------------------------------------------------------------------


@pytest.mark.slow
@needs_proc
def test_concurrent_resumes_of_a_real_training_start_one_worker(tmp_path: Path, runs: list[RunDir]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from tests.local.trainer_helpers import build, chat_file

    model = build(tmp_path / "model")
    spec = JobSpec(
        base_model=str(model),
        training_file=chat_file(tmp_path / "train.jsonl"),
        hyperparameters={"batch_size": 4, "learning_rate": 1e-2, "max_length": 64, "seed": 0, "max_steps": 2000},
        lora={"r": 4, "alpha": 8, "dropout": 0.0},
        local={"device": "cpu", "logging_steps": 1, "save_steps": 2},
    )  # type: ignore[arg-type]
    provider = LocalProvider()
    record = provider.submit(spec, idempotency_key="real")
    run = RunDir(Path(record.output["run_dir"]))
    runs.append(run)
    poll(lambda: bool(run.checkpoint_dirs()) or provider.get(run.id).done, timeout=120)
    cancel_and_wait(provider, run)
    cancelled_at = provider.get(run.id).step or 0

    answers = race_resumes(tmp_path, sys.executable, run.id)
    assert sorted("ok" in a for a in answers) == [False, False, False, True], answers
    assert all("already running" in a.get("message", "already running") for a in answers), answers
    poll(lambda: (provider.get(run.id).step or 0) > cancelled_at + 1, timeout=120)
    assert worker_pids(run) == [run.pid()] and starts(run) == 2, run.log_file.read_text()[-3000:]
    cancel_and_wait(provider, run)
