"""The local trainer, for real on CPU with tiny models: SFT, QLoRA, DPO, resume, DDP, bad inputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from anytune._types import JobStatus
from anytune.errors import ConfigError, DataValidationError
from anytune.local_backend.rundir import RunDir
from tests.local import trainer_helpers as H

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

FAST = {"learning_rate": 1e-2, "batch_size": 8, "seed": 7}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return H.build(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("data")
    return {
        "train": H.chat_file(folder / "train.jsonl", n=24),
        "valid": H.chat_file(folder / "valid.jsonl", n=6, start=100),
        "pref": H.preference_file(folder / "pref.jsonl", n=16),
        "pref_valid": H.preference_file(folder / "pref_valid.jsonl", n=4, start=50),
    }


def _spec(model_dir: Path, train: Path, valid: Path | None = None, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "base_model": str(model_dir),
        "training_file": str(train),
        "lora": {"r": 8},
        "hyperparameters": dict(FAST),
        "local": {"logging_steps": 1, "device": "cpu"},
    }
    if valid is not None:
        spec["validation_file"] = str(valid)
    for key, value in extra.items():
        spec[key] = spec[key] | value if isinstance(spec.get(key), dict) else value
    return spec


def _logits(model: Any, ids: list[int]) -> Any:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0]


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
def test_sft_learns_and_the_adapter_reloads_with_plain_peft(
    tmp_path: Path, model_dir: Path, data: dict[str, Path]
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from anytune.local_backend.train import _Dist, _Trainer

    run = H.make_run(
        tmp_path, **_spec(model_dir, data["train"], data["valid"], hyperparameters={"epochs": 4}, local={"merge": True})
    )
    trainer = _Trainer(run, run.spec(), _Dist())
    trainer.setup()
    result = trainer.train(resume=False)

    assert run.status()["status"] == JobStatus.SUCCEEDED.value
    assert result["steps"] == result["total_steps"] == 12
    assert result["layout"] == "varlen" and result["device"] == "cpu"
    assert result["final_valid_loss"] < result["base_valid_loss"] - 0.3
    points = H.metrics(run)
    assert [p["step"] for p in points] == list(range(1, 13))
    assert points[-1]["train_loss"] < points[0]["train_loss"] - 0.3
    assert points[-1]["tokens_seen"] == result["train_tokens"] > 0
    assert all(p["learning_rate"] > 0 and p["tokens_per_second"] > 0 for p in points)
    assert [p["step"] for p in points if p["valid_loss"] is not None] == [3, 6, 9, 12]  # once per epoch
    assert [c.name for c in run.checkpoint_dirs()] == ["step-6", "step-9"]  # once per epoch, keep 2
    kinds = [e.kind for e in run.events()]
    assert kinds.count("checkpoint") == 3 and "metric" in kinds
    assert json.loads(run.result_file.read_text())["adapter_path"] == str(run.adapter_dir)
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "anytune_spec.json",
        "metrics.jsonl",
    ):
        assert (run.adapter_dir / name).is_file(), name

    tokenizer = AutoTokenizer.from_pretrained(run.adapter_dir)
    ids = tokenizer.apply_chat_template(H.chat_example(5)["messages"], tokenize=True, return_dict=False)
    trained = _logits(trainer.lm.model.eval(), ids)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    plain = PeftModel.from_pretrained(base, run.adapter_dir).eval()
    torch.testing.assert_close(_logits(plain, ids), trained, atol=1e-4, rtol=1e-4)
    merged = AutoModelForCausalLM.from_pretrained(run.merged_dir).eval()
    torch.testing.assert_close(_logits(merged, ids), trained, atol=1e-3, rtol=1e-3)
    with plain.disable_adapter():
        assert not torch.allclose(_logits(plain, ids), trained, atol=1e-2)


def test_qlora_4bit_trains_on_cpu(tmp_path: Path, model_dir: Path, data: dict[str, Path]) -> None:
    from anytune.local_backend.train import run_training

    run = H.make_run(
        tmp_path, **_spec(model_dir, data["train"], data["valid"], quantization="4bit", hyperparameters={"epochs": 3})
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_training(run)
    # Evaluating must not switch bitsandbytes to its inference-only kernel (no backward).
    assert not [w for w in caught if "autograd kernel was not registered" in str(w.message)]
    assert result["quantization"] == "4bit"
    assert result["final_valid_loss"] < result["base_valid_loss"] - 0.3
    config = json.loads((run.adapter_dir / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 16


def test_dpo_widens_the_preference_margin(tmp_path: Path, model_dir: Path, data: dict[str, Path]) -> None:
    from anytune.local_backend.train import run_training

    run = H.make_run(
        tmp_path,
        **_spec(model_dir, data["pref"], data["pref_valid"], method="dpo", hyperparameters={"epochs": 4, "beta": 0.1}),
    )
    result = run_training(run)
    points = H.metrics(run)
    assert result["method"] == "dpo" and result["steps"] == 8
    assert result["base_valid_loss"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference: log 2
    assert result["final_valid_loss"] < result["base_valid_loss"]
    first, last = points[0]["extra"], points[-1]["extra"]
    assert last["rewards/margin"] > first["rewards/margin"] + 0.1
    assert last["rewards/accuracy"] == 1.0
    assert points[-1]["extra"]["valid_rewards/margin"] > 0
    assert points[-1]["token_accuracy"] is None


@pytest.mark.slow
def test_resume_after_cancel_matches_an_uninterrupted_run(
    tmp_path: Path, model_dir: Path, data: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled at step 4 and resumed, a run ends bit for bit where an uninterrupted one does.

    Equality alone would also hold for two runs that never train, so both must have trained: the
    adapter moved off its starting point and the validation loss went down.
    """
    from safetensors.torch import load_file

    from anytune.local_backend.train import run_training

    # Logging every 3 steps and saving every 2: a checkpoint falls inside a logging window.
    spec = _spec(
        model_dir,
        data["train"],
        data["valid"],
        hyperparameters={"epochs": 3},
        lora={"r": 8, "dropout": 0.1},
        local={"save_steps": 2, "logging_steps": 3},
    )
    whole_run = H.make_run(tmp_path, "whole", **spec)
    whole = run_training(whole_run)
    assert whole["steps"] == 9

    victim = H.make_run(tmp_path, "victim", **spec)
    real_update = RunDir.update

    def update(self: RunDir, **fields: Any) -> None:
        real_update(self, **fields)
        if fields.get("step") == 4:
            self.request_cancel()  # seen at the next step boundary

    monkeypatch.setattr(RunDir, "update", update)
    stopped = run_training(victim)
    monkeypatch.setattr(RunDir, "update", real_update)
    assert stopped["status"] == "cancelled" and stopped["steps"] == 4
    assert victim.status()["status"] == JobStatus.CANCELLED.value
    assert victim.last_checkpoint() is not None and victim.last_checkpoint().name == "step-4"  # type: ignore[union-attr]

    resumed = run_training(victim, resume=True)
    assert resumed["steps"] == whole["steps"] == 9
    assert resumed["train_tokens"] == whole["train_tokens"]
    a = load_file(str(whole_run.adapter_dir / "adapter_model.safetensors"))
    b = load_file(str(victim.adapter_dir / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(b[key], a[key]), key  # bit for bit: same data order, RNG and optimizer state
    last = H.metrics(victim)[-1]
    assert last["step"] == 9
    assert last["train_loss"] == H.metrics(whole_run)[-1]["train_loss"]
    assert resumed["final_valid_loss"] == whole["final_valid_loss"]
    assert resumed["base_valid_loss"] == whole["base_valid_loss"]

    # Both trained. PEFT starts every lora_B at zero (the adapter adds nothing); a step moves it.
    lora_b = [key for key in a if "lora_B" in key]
    assert lora_b and all(bool(a[key].any()) for key in lora_b)
    assert whole["final_valid_loss"] < whole["base_valid_loss"] - 0.3


def test_micro_batches_give_the_same_step_as_one_forward(
    tmp_path: Path, model_dir: Path, data: dict[str, Path]
) -> None:
    """A step follows the gradient of the mean token loss over all its labels, however it is split.

    One forward pass or one per example (gradient accumulation), the step equals the clipped
    gradient of the textbook loss (each sequence's own full logits, ``F.cross_entropy`` averaged
    over every labelled token of the step), the logged loss is that loss, and taking the step
    lowers it. A trainer that skips the backward or the optimizer fails every one of these.
    """
    from anytune.local_backend.hparams import MAX_GRAD_NORM
    from anytune.local_backend.train import _Dist, _Trainer, _Window

    moves, losses = [], []
    for name, max_tokens in (("one", 1 << 20), ("many", 1)):
        run = H.make_run(tmp_path, name, **_spec(model_dir, data["train"], lora={"r": 8, "dropout": 0.0}))
        trainer = _Trainer(run, run.spec(), _Dist())
        trainer.setup()
        trainer.max_tokens = max_tokens
        # Plain SGD at rate 1 makes the step the (clipped) gradient itself. AdamW's first step is
        # about lr * sign(g): blind to a wrong loss scale, and unstable where |g| is near its eps,
        # which made this comparison depend on the installed transformers' kernels.
        trainer.optimizer = torch.optim.SGD(trainer.params, lr=1.0)
        trainer.scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda _: 1.0)
        if name == "one":
            ref_loss, grad = H.step_loss_and_gradient(trainer, 0)
            norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grad.values()])))
            clip = min(1.0, MAX_GRAD_NORM / (norm + 1e-6))  # as clip_grad_norm_ scales
            expected = {key: -clip * g for key, g in grad.items()}
        before = H.trainable(trainer)
        first, again = _Window(), _Window()
        trainer.train_step(0, first)
        moves.append({key: value - before[key] for key, value in H.trainable(trainer).items()})
        trainer.train_step(0, again)  # the same examples, after the update
        losses.append([float(w.sums["loss"]) / w.weight for w in (first, again)])

    assert norm > 1e-3  # a real gradient, not a numerically empty one
    for move in moves:
        assert move.keys() == expected.keys()
        for key in expected:
            torch.testing.assert_close(move[key], expected[key], atol=1e-6, rtol=1e-5)
    for before_step, after_step in losses:
        assert before_step == pytest.approx(ref_loss, rel=1e-5)
        assert after_step < before_step - 0.5


def test_missing_model_path_is_named(tmp_path: Path, data: dict[str, Path]) -> None:
    from anytune.local_backend.train import run_training

    missing = tmp_path / "no" / "such-model"
    run = H.make_run(tmp_path, **_spec(missing, data["train"]))
    with pytest.raises(ConfigError, match=r"such-model.*does not exist"):
        run_training(run)


def test_tokenizer_without_chat_template_is_named(tmp_path: Path, model_dir: Path, data: dict[str, Path]) -> None:
    from anytune.local_backend.tiny import CHATML_TEMPLATE
    from anytune.local_backend.train import run_training

    plain = tmp_path / "plain-model"
    shutil.copytree(model_dir, plain)
    (plain / "chat_template.jinja").unlink()
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"plain-model.*no chat template.*local\.chat_template"):
        run_training(H.make_run(tmp_path, **_spec(plain, data["train"])))
    # Giving one makes it work.
    template = tmp_path / "chatml.jinja"
    template.write_text(CHATML_TEMPLATE)
    run = H.make_run(
        tmp_path,
        "with-template",
        **_spec(plain, data["train"], hyperparameters={"max_steps": 1}, local={"chat_template": str(template)}),
    )
    assert run_training(run)["steps"] == 1


def test_preference_data_for_sft_is_refused(tmp_path: Path, model_dir: Path, data: dict[str, Path]) -> None:
    from anytune.local_backend.train import run_training

    with pytest.raises(DataValidationError, match="method='dpo'"):
        run_training(H.make_run(tmp_path, **_spec(model_dir, data["pref"])))
    with pytest.raises(DataValidationError, match="preference pairs"):
        run_training(H.make_run(tmp_path, "dpo", **_spec(model_dir, data["train"], method="dpo")))


def test_two_process_ddp_with_gloo(tmp_path: Path, model_dir: Path, data: dict[str, Path]) -> None:
    run = H.make_run(tmp_path, **_spec(model_dir, data["train"], data["valid"], hyperparameters={"epochs": 2}))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "anytune.local_backend.train",
            str(run.path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = run.result()
    assert result is not None and result["world_size"] == 2 and result["steps"] == 6
    assert run.status()["status"] == JobStatus.SUCCEEDED.value
    assert result["final_valid_loss"] < result["base_valid_loss"]
    points = H.metrics(run)
    assert [p["step"] for p in points] == list(range(1, 7))  # one writer: no duplicated lines
    assert sum(1 for e in run.events() if e.kind == "status" and e.status == JobStatus.SUCCEEDED) == 1
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()
