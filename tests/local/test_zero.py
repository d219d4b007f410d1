"""``local.strategy = "zero2" / "zero3"``: DeepSpeed ZeRO over two CPU processes, against one process.

DeepSpeed's CPU accelerator runs over gloo when oneCCL's bindings are absent, so ZeRO trains for
real here. The same global batch on one process and over two ZeRO processes computes the same
updates: per-step training losses agree within ``LOSS_TOLERANCE`` (measured: under 1e-6; only the
order of float sums differs), with gradient accumulation on (the trainer marks DeepSpeed's
accumulation boundary itself), and the final adapter is the plain PEFT folder one device writes
(under ZeRO-3 gathered from the shards).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from anytune import FineTuneJob, JobStatus
from anytune.local_backend.rundir import RunDir
from tests.local import trainer_helpers as H

pytestmark = [
    pytest.mark.slow,  # three runs, two of them two processes that import torch and DeepSpeed (~90 s)
    pytest.mark.skipif(
        importlib.util.find_spec("deepspeed") is None,
        reason='DeepSpeed is not installed (pip install "anytune[deepspeed]")',
    ),
]

#: Per-step train loss, ZeRO on two processes vs one process (float sums in another order).
LOSS_TOLERANCE = 1e-4
WAIT = 300.0
#: Two micro-batches of two examples per step: one per process, and accumulation across them.
HYPER = {
    "batch_size": 2,
    "gradient_accumulation_steps": 2,
    "learning_rate": 1e-2,
    "max_length": 64,
    "seed": 0,
    "max_steps": 4,
}


def _run(model_dir: Path, train_file: Path, valid_file: Path, **local: Any) -> RunDir:
    job = FineTuneJob.create(
        provider="local",
        base_model=str(model_dir),
        training_file=train_file,
        validation_file=valid_file,  # evaluation runs the model outside the engine: ZeRO-3 gathers there too
        hyperparameters=HYPER,
        # No dropout: the processes draw from their own random streams, one process from one.
        lora={"r": 8, "alpha": 16, "dropout": 0.0},
        local={"device": "cpu", "logging_steps": 1, "save_steps": 2, **local},
    )
    record = job.wait(timeout=WAIT)
    run = RunDir(Path(record.output["run_dir"]))
    assert record.status is JobStatus.SUCCEEDED, (record.error, run.log_file.read_text()[-3000:])
    return run


def _losses(run: RunDir) -> list[float]:
    points = H.metrics(run)
    assert [p["step"] for p in points] == list(range(1, HYPER["max_steps"] + 1))  # one writer
    return [p["train_loss"] for p in points]


def _tensors(adapter: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(adapter / "adapter_model.safetensors"))


def _config(adapter: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((adapter / "adapter_config.json").read_text())
    config["target_modules"] = sorted(config["target_modules"])  # peft writes them from a set
    return config


def test_zero2_and_zero3_on_two_processes_match_one_process_and_save_a_plain_peft_adapter(
    tmp_path: Path, anytune_home: Path
) -> None:
    import torch

    model_dir = H.build(tmp_path / "model")
    train_file = H.chat_file(tmp_path / "train.jsonl", n=16)
    valid_file = H.chat_file(tmp_path / "valid.jsonl", n=4, start=100)
    single = _run(model_dir, train_file, valid_file)
    single_result = single.result()
    assert single_result is not None
    one = _losses(single)
    reference = _tensors(single.adapter_dir)
    for strategy, stage in (("zero2", 2), ("zero3", 3)):
        run = _run(model_dir, train_file, valid_file, num_devices=2, strategy=strategy)
        result = run.result()
        assert result is not None and (result["world_size"], result["strategy"]) == (2, strategy)
        for key in ("base_valid_loss", "final_valid_loss"):
            assert abs(result[key] - single_result[key]) < LOSS_TOLERANCE, (strategy, key)
        assert len(result["peak_rss_mib_per_rank"]) == 2
        logs = "\n".join(e.message for e in run.events() if e.kind == "log")
        assert f"DeepSpeed ZeRO-{stage} over 2 processes" in logs
        two = _losses(run)
        assert max(abs(a - b) for a, b in zip(one, two, strict=True)) < LOSS_TOLERANCE, (strategy, one, two)
        # The adapter: the same files, tensor names, shapes, dtypes and (nearly) values as one device's.
        assert sorted(p.name for p in run.adapter_dir.iterdir()) == sorted(p.name for p in single.adapter_dir.iterdir())
        tensors = _tensors(run.adapter_dir)
        assert sorted(tensors) == sorted(reference)
        for name, value in tensors.items():
            assert (value.shape, value.dtype) == (reference[name].shape, reference[name].dtype), name
            assert torch.allclose(value, reference[name], atol=1e-4), name
        assert _config(run.adapter_dir) == _config(single.adapter_dir)
        H.assert_adapter_trained(run.adapter_dir)
        # The mid-run checkpoint: DeepSpeed's own shards (one optimizer file per process) and a PEFT adapter.
        checkpoint = run.path / "checkpoints" / "step-2"
        shards = sorted(p.name for p in (checkpoint / "deepspeed" / "state").glob("*optim_states.pt"))
        assert len(shards) == 2, shards
        assert (checkpoint / "adapter" / "adapter_config.json").is_file()


@pytest.mark.parametrize(
    ("strategy", "quantization", "method"),
    [("zero3", "4bit", "sft"), ("zero2", "8bit", "sft"), ("zero3", "none", "dpo")],
)
def test_qlora_and_dpo_under_zero_match_one_process(
    tmp_path: Path, anytune_home: Path, strategy: str, quantization: str, method: str
) -> None:
    # The same spec under every strategy: a 4-bit or 8-bit base, and DPO's paired rows, against one process.
    model_dir = H.build(tmp_path / "model")
    data = H.preference_file(tmp_path / "pref.jsonl", n=16) if method == "dpo" else H.chat_file(tmp_path / "t.jsonl")

    def losses(**local: Any) -> list[float]:
        job = FineTuneJob.create(
            provider="local",
            base_model=str(model_dir),
            training_file=data,
            method=method,
            quantization=quantization,
            hyperparameters={**HYPER, "max_steps": 3},
            lora={"r": 8, "alpha": 16, "dropout": 0.0},
            local={"device": "cpu", "logging_steps": 1, **local},
        )
        record = job.wait(timeout=WAIT)
        run = RunDir(Path(record.output["run_dir"]))
        assert record.status is JobStatus.SUCCEEDED, (record.error, run.log_file.read_text()[-3000:])
        return [p["train_loss"] for p in H.metrics(run)]

    one, two = losses(), losses(num_devices=2, strategy=strategy)
    assert len(one) == len(two) == 3
    assert max(abs(a - b) for a, b in zip(one, two, strict=True)) < LOSS_TOLERANCE, (one, two)
