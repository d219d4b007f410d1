"""``local.strategy = "fsdp"``: FSDP2 over two CPU processes (gloo), against one process.

The same global batch on one process and sharded over two computes the same updates: the per-step
training losses agree within ``LOSS_TOLERANCE`` (measured: under 1e-6; only the order of float
sums differs), and the saved adapter is the plain PEFT folder a one-device run writes. A run resumed
from a mid-run FSDP checkpoint ends on the same losses as the run that was never interrupted, on
two processes or on one. QLoRA: a 4-bit base shards too, with the same losses as one process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from anytune import FineTuneJob, JobStatus
from anytune.local_backend.rundir import RunDir
from tests.local import trainer_helpers as H

pytestmark = pytest.mark.slow  # each run starts processes that import torch and train (15-30 s)

#: Per-step train loss, FSDP on two processes vs one process (float sums in another order).
LOSS_TOLERANCE = 1e-4
WAIT = 300.0
HYPER = {"batch_size": 4, "learning_rate": 1e-2, "max_length": 64, "seed": 0, "max_steps": 6}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return H.build(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return H.chat_file(tmp_path_factory.mktemp("data") / "train.jsonl", n=24)


def _local(**extra: Any) -> dict[str, Any]:
    return {"device": "cpu", "logging_steps": 1, "save_steps": 3, **extra}


def _create(model_dir: Path, train_file: Path, local: dict[str, Any]) -> FineTuneJob:
    return FineTuneJob.create(
        provider="local",
        base_model=str(model_dir),
        training_file=train_file,
        hyperparameters=HYPER,
        # No dropout: the processes draw from their own random streams, one process from one.
        lora={"r": 8, "alpha": 16, "dropout": 0.0},
        local=local,
    )


def _finish(job: FineTuneJob) -> RunDir:
    record = job.wait(timeout=WAIT)
    run = RunDir(Path(record.output["run_dir"]))
    assert record.status is JobStatus.SUCCEEDED, (record.error, run.log_file.read_text()[-3000:])
    return run


def _losses(run: RunDir) -> list[float]:
    points = H.metrics(run)
    assert [p["step"] for p in points] == list(range(1, HYPER["max_steps"] + 1))  # one writer
    return [p["train_loss"] for p in points]


def _tensors(adapter: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    from safetensors import safe_open

    with safe_open(str(adapter / "adapter_model.safetensors"), framework="pt") as f:
        return {k: (tuple(f.get_tensor(k).shape), str(f.get_tensor(k).dtype)) for k in f.keys()}  # noqa: SIM118


def _config(adapter: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((adapter / "adapter_config.json").read_text())
    # peft writes target_modules from a set: its order changes from process to process.
    config["target_modules"] = sorted(config["target_modules"])
    return config


def test_fsdp_on_two_processes_matches_one_process_and_saves_a_plain_peft_adapter(
    model_dir: Path, train_file: Path, anytune_home: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    single = _finish(_create(model_dir, train_file, _local()))
    job = _create(model_dir, train_file, _local(num_devices=2, strategy="fsdp"))
    launch = json.loads((RunDir(Path(job.record.output["run_dir"])).path / "launch.json").read_text())
    assert launch["command"][1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    sharded = _finish(job)

    result = sharded.result()
    assert result is not None and (result["world_size"], result["strategy"]) == (2, "fsdp")
    # Each rank's own peak resident memory (the bench compares strategies on it).
    assert len(result["peak_rss_mib_per_rank"]) == 2 and min(result["peak_rss_mib_per_rank"]) > 0
    assert len(result["final_rss_mib_per_rank"]) == 2
    assert "FSDP2 over 2 processes: sharded 2 decoder layers, the root" in "\n".join(
        e.message for e in sharded.events() if e.kind == "log"
    )
    one, two = _losses(single), _losses(sharded)
    assert max(abs(a - b) for a, b in zip(one, two, strict=True)) < LOSS_TOLERANCE, (one, two)
    assert two[-1] < two[0]

    # The adapter: the same files, tensors (names, shapes, dtypes) and config as one device's.
    assert sorted(p.name for p in sharded.adapter_dir.iterdir()) == sorted(p.name for p in single.adapter_dir.iterdir())
    assert _tensors(sharded.adapter_dir) == _tensors(single.adapter_dir)
    assert _config(sharded.adapter_dir) == _config(single.adapter_dir)
    H.assert_adapter_trained(sharded.adapter_dir)
    # ...which plain peft loads, and which changes the model's output.
    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    peft_model = PeftModel.from_pretrained(base, str(sharded.adapter_dir))
    assert not any(".default." in k for k in _tensors(sharded.adapter_dir))
    import torch

    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        tuned = peft_model(input_ids=ids).logits
        with peft_model.disable_adapter():
            plain = peft_model(input_ids=ids).logits
    assert not torch.allclose(tuned, plain)
    # The mid-run checkpoint is sharded-state aware: whole adapter and optimizer state, by name.
    checkpoint = sharded.path / "checkpoints" / "step-3"
    assert (checkpoint / "fsdp_trainable.pt").is_file() and (checkpoint / "adapter" / "adapter_config.json").is_file()


def test_fsdp_qlora_shards_a_4bit_base_and_matches_one_process(
    model_dir: Path, train_file: Path, anytune_home: Path
) -> None:
    # FSDP2 shards the 4-bit base's packed weights (bitsandbytes' quant-storage dtype) with the rest;
    # the same global batch gives the same losses as one process on the same 4-bit base.
    hyper = {**HYPER, "max_steps": 4}

    def create(local: dict[str, Any]) -> FineTuneJob:
        return FineTuneJob.create(
            provider="local",
            base_model=str(model_dir),
            training_file=train_file,
            quantization="4bit",
            hyperparameters=hyper,
            lora={"r": 8, "alpha": 16, "dropout": 0.0},
            local=local,
        )

    single = _finish(create(_local()))
    sharded = _finish(create(_local(num_devices=2, strategy="fsdp")))
    result = sharded.result()
    assert result is not None and (result["world_size"], result["strategy"], result["quantization"]) == (
        2,
        "fsdp",
        "4bit",
    )
    one = [p["train_loss"] for p in H.metrics(single)]
    two = [p["train_loss"] for p in H.metrics(sharded)]
    assert len(one) == len(two) == 4
    assert max(abs(a - b) for a, b in zip(one, two, strict=True)) < LOSS_TOLERANCE, (one, two)
    # The adapter is the one a single 4-bit run writes: same tensors, same config.
    assert _tensors(sharded.adapter_dir) == _tensors(single.adapter_dir)
    assert _config(sharded.adapter_dir) == _config(single.adapter_dir)
    H.assert_adapter_trained(sharded.adapter_dir)


def test_an_fsdp_run_resumed_from_its_checkpoint_ends_like_the_uninterrupted_one(
    tmp_path: Path, model_dir: Path, train_file: Path
) -> None:
    spec = {
        "base_model": str(model_dir),
        "training_file": str(train_file),
        "hyperparameters": HYPER,
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "local": _local(num_devices=2, strategy="fsdp"),
    }
    whole = H.make_run(tmp_path, "whole", **spec)
    _torchrun(whole)
    # A run that stopped after its step-3 checkpoint: its folder holds that checkpoint, nothing after.
    # It resumes on ONE process: an FSDP checkpoint holds whole tensors keyed by name, so any number
    # of processes loads it (two processes resuming is tests/local/test_distributed_faults.py's kill -9).
    import shutil

    alone = H.make_run(tmp_path, "alone", **spec)
    alone.checkpoints_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(whole.path / "checkpoints" / "step-3", alone.checkpoints_dir / "step-3")
    lines = whole.metrics_file.read_text().splitlines(keepends=True)[:3]
    alone.metrics_file.write_text("".join(lines))
    expected = [p["train_loss"] for p in H.metrics(whole) if p["step"] > 3]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    proc = subprocess.run(
        [sys.executable, "-m", "anytune.local_backend.train", str(alone.path), "--resume"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert any("resumed from checkpoint at step 3" in e.message for e in alone.events() if e.kind == "log")
    single = [p["train_loss"] for p in H.metrics(alone) if p["step"] > 3]
    assert len(single) == 3 and max(abs(a - b) for a, b in zip(single, expected, strict=True)) < LOSS_TOLERANCE


def _torchrun(run: RunDir, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*command, "-m", "anytune.local_backend.train", str(run.path), *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert run.status()["status"] == JobStatus.SUCCEEDED.value


def test_two_nodes_of_two_processes_meet_at_a_c10d_rendezvous(
    tmp_path: Path, model_dir: Path, train_file: Path
) -> None:
    # The commands --dry-run shows for node 0 and node 1, run side by side on this machine.
    import socket

    from anytune.local_backend.launch import node_commands

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    local = _local(num_devices=2, strategy="fsdp", nodes=2, rdzv_endpoint=f"127.0.0.1:{port}")
    run = H.make_run(
        tmp_path,
        "nodes",
        base_model=str(model_dir),
        training_file=str(train_file),
        hyperparameters=HYPER,
        lora={"r": 8, "alpha": 16, "dropout": 0.0},
        local=local,
    )
    reference = H.make_run(
        tmp_path,
        "one",
        base_model=str(model_dir),
        training_file=str(train_file),
        hyperparameters=HYPER,
        lora={"r": 8, "alpha": 16, "dropout": 0.0},
        local=_local(),
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    spec = run.spec().local
    assert spec is not None
    nodes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for command in reversed(node_commands(sys.executable, run.path, spec))  # node 1 first: order is free
    ]
    outputs = [node.communicate(timeout=WAIT)[0] for node in nodes]
    assert all(node.returncode == 0 for node in nodes), "\n".join(o[-3000:] for o in outputs)
    result = run.result()
    assert result is not None and (result["world_size"], result["strategy"]) == (4, "fsdp")
    single = subprocess.run(
        [sys.executable, "-m", "anytune.local_backend.train", str(reference.path)], env=env, capture_output=True
    )
    assert single.returncode == 0, single.stderr[-3000:]
    one, four = _losses(reference), _losses(run)  # _losses: one line per step, so one writer
    assert max(abs(a - b) for a, b in zip(one, four, strict=True)) < LOSS_TOLERANCE, (one, four)
