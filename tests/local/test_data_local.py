"""A local LoRA job end to end from a CSV and a text template, and from a Hub dataset id with split
slicing: the data section is converted to chat JSONL before the run starts, and the tiny model trains
on it for real."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from anytune import FineTuneJob, JobStatus, JobStore
from tests.conftest import FakeClock, chat_example
from tests.hubdata import QA, REPO, serve_hub_datasets
from tests.local.trainer_helpers import assert_adapter_trained

WAIT = 180.0


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 64-wide Llama-shaped model with a ChatML tokenizer."""
    from anytune.local_backend.tiny import build_tiny_model

    texts = [m["content"] for i in range(40) for m in chat_example(i)["messages"]]
    texts += [f"### Question: What is {i} plus {i}? ### Answer: It is {2 * i}." for i in range(40)]
    texts += [f"{row['question']} {row['answer']}" for row in QA]
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


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> Iterator[object]:
    pytest.importorskip("datasets")
    with serve_hub_datasets(tmp_path, monkeypatch, clock) as fake:
        yield fake


@pytest.mark.slow  # about 30 s: a detached worker imports torch and trains
def test_a_local_lora_job_trains_on_a_slice_of_a_hub_dataset(tiny_model: Path, hub: object, anytune_home: Path) -> None:
    job = FineTuneJob.create(
        provider="local",
        base_model=str(tiny_model),
        data={
            "source": REPO,
            "split": "train[4:16]",
            "eval_split": "test",
            "columns": {"prompt": "question", "completion": "answer"},
        },
        hyperparameters={"batch_size": 4, "learning_rate": 1e-2, "max_length": 64, "seed": 0, "max_steps": 3},
        lora={"r": 4, "alpha": 8, "dropout": 0.0},
        local={"device": "cpu", "logging_steps": 1},
    )
    # What the worker trains and evaluates on: the slice's 12 rows and the test split's 3, converted.
    row = JobStore(anytune_home / "jobs.db").get(job.ref)
    assert row is not None and "training_file" not in row.spec
    assert (row.spec["data"]["source"], row.spec["data"]["split"]) == (REPO, "train[4:16]")
    converted = sorted(
        (json.loads(line) for f in (anytune_home / "data").rglob("*.jsonl") for line in f.read_text().splitlines()),
        key=lambda ex: (len(ex["messages"][0]["content"]), ex["messages"][0]["content"]),
    )
    wanted = [QA[i] for i in range(4, 16)] + [QA[i] for i in range(3)]
    assert sorted(ex["messages"][0]["content"] for ex in converted) == sorted(r["question"] for r in wanted)
    assert converted[0]["messages"][1] == {"role": "assistant", "content": QA[0]["answer"]}
    record = job.wait(timeout=WAIT)
    assert record.status is JobStatus.SUCCEEDED, record.error
    assert record.step == 3
    assert_adapter_trained(Path(str(job.result().adapter_path)))
