"""Faults of a multi-process local job (2 CPU ranks over gloo under ``torch.distributed.run``).

- SIGKILL of the launcher (the process the provider started) ends every rank within seconds.
- ``cancel`` stops every rank: the job ends ``cancelled`` at a step boundary and no process is left.
- SIGKILL of one rank: the launcher stops the other, the job ends failed, and ``jobs resume``
  continues from the last checkpoint to the step count of a run that was never interrupted.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")
from anytune import FineTuneJob, JobStatus
from anytune.local_backend.rundir import RunDir
from tests.clitools import run_cli
from tests.local import trainer_helpers as H

psutil = pytest.importorskip("psutil")

pytestmark = [
    pytest.mark.slow,  # each test starts a launcher and two ranks that import torch (20-40 s)
    pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL of a launcher or a rank"),
]

WAIT = 240.0
#: How long ranks may outlive their launcher (the kernel's death signal acts at once).
ORPHAN_GRACE_S = 5.0


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return H.build(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return H.chat_file(tmp_path_factory.mktemp("data") / "train.jsonl", n=24)


def _create(model_dir: Path, train_file: Path, *, steps: int, strategy: str = "ddp") -> FineTuneJob:
    return FineTuneJob.create(
        provider="local",
        base_model=str(model_dir),
        training_file=train_file,
        hyperparameters={"batch_size": 4, "learning_rate": 1e-2, "max_length": 64, "seed": 0, "max_steps": steps},
        lora={"r": 4, "alpha": 8, "dropout": 0.0},
        local={"device": "cpu", "num_devices": 2, "strategy": strategy, "logging_steps": 1, "save_steps": 2},
    )


def _run(job: FineTuneJob) -> RunDir:
    return RunDir(Path(job.record.output["run_dir"]))


def _log(job: FineTuneJob) -> str:
    path = _run(job).log_file
    return path.read_text(errors="replace")[-4000:] if path.exists() else "(no log)"


def _poll(condition: Callable[[], bool], timeout: float = WAIT, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(every)


def _alive(proc: Any) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _ranks(job: FineTuneJob) -> dict[int, Any]:
    """The launcher's rank processes, by LOCAL_RANK, once both are up and training."""
    launcher = psutil.Process(_run(job).pid())
    found: dict[int, Any] = {}

    def both() -> bool:
        for child in launcher.children():
            try:
                found[int(child.environ()["LOCAL_RANK"])] = child
            except (psutil.Error, KeyError):
                continue
        return len(found) == 2

    _poll(both, timeout=60)
    return found


def _training(job: FineTuneJob) -> None:
    _poll(lambda: (job.refresh().step or 0) >= 1 or job.record.done)
    assert job.record.status is JobStatus.RUNNING, (job.record.error, _log(job))


def _all_gone(procs: list[Any], timeout: float) -> float:
    start = time.monotonic()
    try:
        _poll(lambda: not any(_alive(p) for p in procs), timeout=timeout, every=0.02)
    except AssertionError:
        left = [p.pid for p in procs if _alive(p)]
        for p in procs:
            if _alive(p):
                p.kill()
        raise AssertionError(f"processes {left} still running {timeout} s on") from None
    return time.monotonic() - start


def test_sigkill_of_the_launcher_leaves_no_rank_training(model_dir: Path, train_file: Path) -> None:
    job = _create(model_dir, train_file, steps=5000)
    ranks = _ranks(job)
    _training(job)
    launcher = psutil.Process(_run(job).pid())
    assert launcher.pid not in [p.pid for p in ranks.values()]
    launcher.kill()
    took = _all_gone(list(ranks.values()), ORPHAN_GRACE_S)
    assert took < ORPHAN_GRACE_S
    # No launcher, no final status: the record says the worker died and how to go on.
    record = job.refresh()
    assert record.status is JobStatus.FAILED and record.error is not None, record
    assert record.error.code == "worker_died", record.error
    assert (record.step or 0) < 5000


def test_cancel_stops_every_rank(model_dir: Path, train_file: Path) -> None:
    job = _create(model_dir, train_file, steps=5000, strategy="fsdp")
    ranks = _ranks(job)
    _training(job)
    launcher = psutil.Process(_run(job).pid())
    assert job.cancel().status in (JobStatus.RUNNING, JobStatus.CANCELLED)
    record = job.wait(timeout=WAIT)
    assert record.status is JobStatus.CANCELLED, (record.error, _log(job))
    _all_gone([launcher, *ranks.values()], timeout=30)
    # It stopped at a step boundary with that step's checkpoint, one writer.
    assert job.checkpoints()[-1].step == record.step
    assert 1 <= (record.step or 0) < 5000


def test_sigkill_of_a_rank_then_resume_reaches_the_uninterrupted_step_count(
    model_dir: Path, train_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    steps = 6
    job = _create(model_dir, train_file, steps=steps)
    run = _run(job)
    ranks = _ranks(job)
    launcher = psutil.Process(run.pid())
    _poll(lambda: len(run.checkpoint_dirs()) >= 1 or job.refresh().done, every=0.01)
    assert not job.refresh().done, _log(job)
    total = job.record.total_steps
    assert total == steps
    ranks[1].kill()
    # The launcher notices, stops the other rank and exits: nothing of the run is left running.
    _all_gone([launcher, *ranks.values()], timeout=60)
    record = job.refresh()
    assert record.status is JobStatus.FAILED and record.error is not None, (record, _log(job))
    # The survivor's collective broke: the record names the lost peer, not a bare gloo error.
    assert record.error.code == "rank_lost" and "jobs resume" in record.error.message, record.error
    killed_at = record.step or 0
    assert killed_at < steps

    resumed = run_cli(capsys, "jobs", "resume", job.ref, "--wait", "--json")
    assert resumed.code == 0, resumed.err + _log(job)
    final = json.loads(resumed.out)
    assert final["status"] == "succeeded", final
    assert final["step"] == final["total_steps"] == steps
    events = [e.message for e in job.events() if e.kind == "status"]
    assert any("resuming from step-" in m for m in events), events
    assert (run.adapter_dir / "adapter_config.json").is_file()
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()
    H.assert_adapter_trained(run.adapter_dir)
    # Each step once in the curve: the resumed run picks up after its checkpoint, one writer.
    points = [m.step for m in job.metrics()]
    assert points == sorted(set(points)) and points[-1] == steps, points
