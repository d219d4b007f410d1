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
