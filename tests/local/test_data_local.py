"""A local LoRA job end to end from a CSV and a text template: the data section is converted to chat
JSONL before the run starts, and the tiny model trains on it for real."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from anytune import FineTuneJob, JobStatus, JobStore
from tests.conftest import chat_example
from tests.local.trainer_helpers import assert_adapter_trained

WAIT = 180.0


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 64-wide Llama-shaped model with a ChatML tokenizer."""
    from anytune.local_backend.tiny import build_tiny_model

    texts = [m["content"] for i in range(40) for m in chat_example(i)["messages"]]
    texts += [f"### Question: What is {i} plus {i}? ### Answer: It is {2 * i}." for i in range(40)]
    return build_tiny_model(
        tmp_path_factory.mktemp("tiny") / "model",
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        vocab_size=512,
        texts=texts,
    )


@pytest.mark.slow  # about 30 s: a detached worker imports torch and trains
def test_a_local_lora_job_trains_on_a_csv_through_a_template(
    tiny_model: Path, tmp_path: Path, anytune_home: Path
) -> None:
    source = tmp_path / "qa.csv"
    with source.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["question", "answer"])
        writer.writerows([f"What is {i} plus {i}?", f"It is {2 * i}."] for i in range(24))
    job = FineTuneJob.create(
        provider="local",
        base_model=str(tiny_model),
        data={"source": str(source), "text_template": "### Question: {question} ### Answer: {answer}"},
        hyperparameters={"batch_size": 4, "learning_rate": 1e-2, "max_length": 64, "seed": 0, "max_steps": 4},
        lora={"r": 4, "alpha": 8, "dropout": 0.0},
        local={"device": "cpu", "logging_steps": 1},
    )
    record = job.wait(timeout=WAIT)
    assert record.status is JobStatus.SUCCEEDED, record.error
    assert record.step == 4
    assert_adapter_trained(Path(str(job.result().adapter_path)))
    row = JobStore(anytune_home / "jobs.db").get(job.ref)
    assert row is not None and row.spec["data"]["source"] == str(source) and "training_file" not in row.spec
