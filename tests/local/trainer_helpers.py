"""Shared helpers of the trainer tests: tiny models, datasets and runs built on the spot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from anytune._spec import JobSpec
from anytune.local_backend.rundir import RunDir
from tests.conftest import chat_example, write_jsonl


def texts() -> list[str]:
    return [m["content"] for i in range(60) for m in chat_example(i)["messages"]] + [
        "I am not sure about that.",
        "Maybe it is something else.",
    ]


def build(path: Path, **shape: Any) -> Path:
    from anytune.local_backend.tiny import build_tiny_model

    options: dict[str, Any] = {
        "hidden_size": 64,
        "num_layers": 2,
        "num_heads": 4,
        "num_kv_heads": 2,
        "vocab_size": 512,
        "texts": texts(),
    }
    return build_tiny_model(path, **(options | shape))


def chat_file(path: Path, n: int = 24, start: int = 0) -> Path:
    return write_jsonl(path, [chat_example(start + i) for i in range(n)])


def preference_example(i: int) -> dict[str, Any]:
    return {
        "input": {"messages": [{"role": "user", "content": f"What is {i} plus {i}?"}]},
        "preferred_output": [{"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}],
        "non_preferred_output": [{"role": "assistant", "content": "I am not sure about that."}],
    }


def preference_file(path: Path, n: int = 16, start: int = 0) -> Path:
    return write_jsonl(path, [preference_example(start + i) for i in range(n)])


def make_run(tmp: Path, name: str = "run", **spec: Any) -> RunDir:
    run = RunDir(tmp / name)
    run.create(JobSpec.model_validate(spec), idempotency_key="k")
    return run


def metrics(run: RunDir) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run.metrics_file.read_text().splitlines() if line.strip()]


def trainable(trainer: Any) -> dict[str, Any]:
    """A copy of the trainer's trainable (adapter) weights, by name."""
    return {n: p.detach().clone() for n, p in trainer.lm.model.named_parameters() if p.requires_grad}


def step_loss_and_gradient(trainer: Any, step: int) -> tuple[float, dict[str, Any]]:
    """The mean token cross-entropy of ``step``'s examples and its gradient, the textbook way.

    Each sequence goes through the model alone (no packing, no fused head): its full logits, the
    label positions' cross-entropy summed, divided by the labels of the whole step. The model's
    gradients are left cleared.
    """
    import torch
    import torch.nn.functional as F

    from anytune.local_backend import data as D

    plan = trainer.plan
    model = trainer.lm.model
    indices = D.step_examples(len(trainer.train_data), plan.step_examples, plan.seed, step)
    total = torch.zeros(())
    labels = 0
    for i in indices:
        for seq in trainer.train_data.examples[i].seqs:
            ids = torch.as_tensor(seq.input_ids, dtype=torch.long)
            learn = torch.as_tensor(seq.learn)
            assert not learn[0]  # the first token is never predicted
            target = torch.where(learn, ids, -100)
            logits = model(input_ids=ids[None]).logits[0].float()
            total = total + F.cross_entropy(logits[:-1], target[1:], ignore_index=-100, reduction="sum")
            labels += int(learn.sum())
    model.zero_grad(set_to_none=True)
    loss = total / labels
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return float(loss.detach()), grads


def assert_adapter_trained(adapter: Path) -> None:
    """peft starts every lora_B at zero (the adapter is then a no-op): a trained one has moved."""
    from safetensors import safe_open

    with safe_open(str(adapter / "adapter_model.safetensors"), framework="pt") as f:
        names = [k for k in f.keys() if "lora_B" in k]  # noqa: SIM118 (safe_open is not iterable)
        moved = {k: float(f.get_tensor(k).abs().sum()) for k in names}
    assert moved and all(v > 0 for v in moved.values()), moved
