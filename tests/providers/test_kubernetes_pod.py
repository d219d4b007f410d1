"""The pod's entry point, run here as a pod runs it (no cluster): ``python -m
anytune.local_backend.k8s_job`` in a subprocess, a tiny model built on the spot, the storage a
``file://`` URL. It trains for real on CPU, prints the metric lines, copies checkpoints to the
storage (complete ones marked ``.done``), and writes the adapter and result there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("peft")
pytest.importorskip("fsspec")

from anytune.local_backend.joblog import METRIC_PREFIX, RESULT_PREFIX
from tests.local.trainer_helpers import build, chat_file


@pytest.mark.slow
def test_the_pod_entry_point_trains_and_writes_to_the_storage(tmp_path: Path) -> None:
    model = build(tmp_path / "model")
    storage = tmp_path / "storage"
    (storage / "inputs" / "abc").mkdir(parents=True)
    chat_file(storage / "inputs" / "abc" / "train.jsonl", n=8)
    spec = {
        "base_model": str(model),
        "hyperparameters": {"max_steps": 4, "batch_size": 4, "seed": 1},
        "local": {"device": "cpu", "logging_steps": 1, "save_steps": 2},
    }
    argv = [sys.executable, "-m", "anytune.local_backend.k8s_job", "--storage", f"file://{storage}", "--job", "j1"]
    argv += ["--train", "inputs/abc/train.jsonl", "--spec", json.dumps(spec), "--workdir", str(tmp_path / "pod")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [json.loads(x[len(METRIC_PREFIX) :])["step"] for x in lines if x.startswith(METRIC_PREFIX)] == [1, 2, 3, 4]
    written = json.loads(next(x for x in lines if x.startswith(RESULT_PREFIX))[len(RESULT_PREFIX) :])
    out = storage / "jobs" / "j1"
    assert written["adapter"] == f"file://{storage}/jobs/j1/adapter"
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "anytune_result.json").is_file()
    assert (
        json.loads((out / "anytune_spec.json").read_text())["training_file"]
        == f"file://{storage}/inputs/abc/train.jsonl"
    )
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-2.done"]


def test_only_complete_checkpoints_are_restored(tmp_path: Path) -> None:
    """A checkpoint is complete once its ``.done`` marker is written (object stores have no atomic
    folder rename): a pod created again restores the newest complete one, never a half copy."""
    from anytune import JobSpec
    from anytune.local_backend.k8s_job import Storage, StorageRunDir, _restore

    remote = tmp_path / "storage" / "jobs" / "j1" / "checkpoints"
    for step, done in ((2, True), (4, True), (6, False)):
        (remote / f"step-{step}" / "adapter").mkdir(parents=True)
        (remote / f"step-{step}" / "state.json").write_text(json.dumps({"step": step}))
        if done:
            (remote / f"step-{step}.done").write_text("")
    storage = Storage(f"file://{tmp_path}/storage")
    assert storage.complete_checkpoints("jobs/j1/checkpoints") == [2, 4]
    run = StorageRunDir(tmp_path / "run")
    run.create(JobSpec(base_model="m", training_file=chat_file(tmp_path / "t.jsonl", n=2)), idempotency_key="j1")
    assert _restore(storage, "jobs/j1", run) == 4
    last = run.last_checkpoint()
    assert last is not None and json.loads((last / "state.json").read_text()) == {"step": 4}
