"""``anytune data preview --base-model``: the tokens marked learned are the trainer's labels, exactly."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from tests.clitools import run_cli
from tests.conftest import write_jsonl
from tests.local import trainer_helpers as H

pytest.importorskip("torch")
pytest.importorskip("transformers")

TEMPLATE = "### Question: {question} ### Answer: {answer}"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return H.build(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> Any:
    from anytune.local_backend.model import load_tokenizer

    return load_tokenizer(str(model_dir))


def _preview(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    result = run_cli(capsys, "data", "preview", *args, "--json")
    assert result.code == 0, result.err
    data: list[dict[str, Any]] = json.loads(result.out)
    return data


def _learned(sequence: dict[str, Any]) -> list[str]:
    return [s["text"] for s in sequence["segments"] if s["learned"]]


def _text(sequence: dict[str, Any]) -> str:
    return "".join(s["text"] for s in sequence["segments"])


def _labels(tokenizer: Any, messages: list[dict[str, Any]]) -> int:
    """The trainer's label count: positions whose label is not -100."""
    import torch

    from anytune.local_backend.data import encode_conversation

    enc = encode_conversation(tokenizer, messages)
    ids = torch.as_tensor(enc.input_ids, dtype=torch.long)
    labels = torch.where(torch.as_tensor(enc.learn), ids, -100)
    return int((labels != -100).sum())


def test_csv_with_a_template_learns_the_answer_and_its_end_of_turn(
    tmp_path: Path, model_dir: Path, tokenizer: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "qa.csv"
    with src.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["question", "answer"])
        writer.writeheader()
        writer.writerows(
            {"question": f"What is {i} plus {i}?", "answer": f"{i} plus {i} is {2 * i}."} for i in range(8)
        )
    examples = _preview(capsys, str(src), "--template", TEMPLATE, "--base-model", str(model_dir), "-n", "2")
    assert len(examples) == 2
    first = examples[0]
    messages = [
        {"role": "user", "content": "### Question: What is 0 plus 0? ### Answer: "},
        {"role": "assistant", "content": "0 plus 0 is 0."},
    ]
    assert _text(first) == tokenizer.apply_chat_template(messages, tokenize=False)
    assert _learned(first) == ["0 plus 0 is 0.<|im_end|>"]
    assert first["learned_tokens"] == _labels(tokenizer, messages)
    assert first["tokens"] == len(tokenizer(_text(first), add_special_tokens=False)["input_ids"])
    assert first["cut_at"] is None and first["notes"] == []
    assert all(s["role"] is None and not s["cut"] for s in first["segments"])

    shown = run_cli(capsys, "data", "preview", str(src), "--template", TEMPLATE, "-m", str(model_dir), "-n", "1")
    assert shown.code == 0, shown.err
    assert "<|im_start|>assistant\n⟦0 plus 0 is 0.<|im_end|>⟧" in shown.out
    assert f"{first['tokens']} tokens, {first['learned_tokens']} learned" in shown.out
    assert "--base-model" not in shown.err


def test_weights_and_several_turns_match_the_trainer(
    tmp_path: Path, model_dir: Path, tokenizer: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    messages = [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "What is 3 plus 3?"},
        {"role": "assistant", "content": "I am not sure about that.", "weight": 0},
        {"role": "user", "content": "Try again: what is 3 plus 3?"},
        {"role": "assistant", "content": "3 plus 3 is 6."},
        {"role": "user", "content": "And 4 plus 4?"},
        {"role": "assistant", "content": "4 plus 4 is 8.", "weight": 1},
    ]
    src = write_jsonl(tmp_path / "chat.jsonl", [{"messages": messages}])
    (example,) = _preview(capsys, str(src), "--base-model", str(model_dir))
    assert _learned(example) == ["3 plus 3 is 6.<|im_end|>", "4 plus 4 is 8.<|im_end|>"]
    assert example["learned_tokens"] == _labels(tokenizer, messages)
    clean = [{k: v for k, v in m.items() if k != "weight"} for m in messages]
    assert _text(example) == tokenizer.apply_chat_template(clean, tokenize=False)


def test_preference_pairs_match_the_trainer(
    tmp_path: Path, model_dir: Path, tokenizer: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from anytune.local_backend.data import load_dataset

    src = H.preference_file(tmp_path / "pref.jsonl", n=2)
    examples = _preview(capsys, str(src), "--base-model", str(model_dir))
    data = load_dataset(src, tokenizer, method="dpo", max_length=1024)
    for example, trained in zip(examples, data.examples, strict=True):
        assert example["method"] == "dpo"
        for name, seq in zip(("chosen", "rejected"), trained.seqs, strict=True):
            assert example[name]["learned_tokens"] == seq.num_targets
            assert example[name]["tokens"] == len(seq)
            assert "".join(_learned(example[name])) == tokenizer.decode(seq.input_ids[seq.learn].tolist())
    assert _learned(examples[0]["rejected"]) == ["I am not sure about that.<|im_end|>"]
    assert examples[0]["learned_tokens"] == sum(s.num_targets for s in data.examples[0].seqs)


def test_max_length_shows_the_cut(
    tmp_path: Path, model_dir: Path, tokenizer: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from anytune.local_backend.data import load_dataset

    long = {
        "messages": [{"role": "user", "content": "What is 7 plus 7?"}, {"role": "assistant", "content": "7. " * 40}]
    }
    prompt_only = {
        "messages": [{"role": "user", "content": "8 plus 8? " * 40}, {"role": "assistant", "content": "16."}]
    }
    src = write_jsonl(tmp_path / "long.jsonl", [long, prompt_only])
    cut, empty = _preview(capsys, str(src), "--base-model", str(model_dir), "--max-length", "24")
    (trained,) = load_dataset(src, tokenizer, method="sft", max_length=24).examples  # prompt_only is left out
    (seq,) = trained.seqs
    assert cut["cut_at"] == 24 and cut["tokens"] > 24
    assert cut["learned_tokens"] == seq.num_targets
    kept = "".join(s["text"] for s in cut["segments"] if not s["cut"])
    assert len(tokenizer(kept, add_special_tokens=False)["input_ids"]) == 24
    assert not any(s["learned"] for s in cut["segments"] if s["cut"])
    assert any("cut at max_length=24" in note for note in cut["notes"])
    assert empty["learned_tokens"] == 0
    assert any("the trainer leaves it out" in note for note in empty["notes"])
    shown = run_cli(capsys, "data", "preview", str(src), "-m", str(model_dir), "--max-length", "24", "-n", "1")
    assert "✂ max_length" in shown.out and "cut at max_length 24" in shown.out


def test_without_max_length_the_cut_is_where_a_job_with_none_cuts(
    tmp_path: Path, model_dir: Path, tokenizer: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from anytune.local_backend.data import load_dataset
    from anytune.local_backend.hparams import DEFAULT_MAX_LENGTH, default_max_length

    assert default_max_length(str(model_dir))[0] == DEFAULT_MAX_LENGTH  # 2048 positions: the trainer's 1024
    long = {"messages": [{"role": "user", "content": "Count."}, {"role": "assistant", "content": "7. " * 1200}]}
    src = write_jsonl(tmp_path / "long.jsonl", [long])
    (cut,) = _preview(capsys, str(src), "--base-model", str(model_dir))
    (trained,) = load_dataset(src, tokenizer, method="sft", max_length=DEFAULT_MAX_LENGTH).examples
    assert cut["tokens"] > DEFAULT_MAX_LENGTH and cut["cut_at"] == DEFAULT_MAX_LENGTH
    assert cut["learned_tokens"] == trained.seqs[0].num_targets
    assert any(f"cut at max_length={DEFAULT_MAX_LENGTH}" in note for note in cut["notes"])


def test_a_chat_template_file_replaces_the_tokenizers(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template = tmp_path / "plain.jinja"
    template.write_text(
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}",
        encoding="utf-8",
    )
    src = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "Capital of France?", "completion": "Paris."}])
    (example,) = _preview(capsys, str(src), "-m", str(model_dir), "--chat-template", str(template))
    assert _text(example) == "user: Capital of France?<|im_end|>\nassistant: Paris.<|im_end|>\n"
    assert _learned(example) == ["Paris.<|im_end|>"]


def test_message_marks_without_a_model_follow_the_trainers_rule() -> None:
    from anytune._data.preview import _as_messages
    from anytune.local_backend.data import _items

    chat = {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "u"},
            {"role": "assistant", "content": "a", "weight": 0},
            {"role": "assistant", "content": "b", "weight": 1},
            {"role": "assistant", "content": "c"},
        ]
    }
    preview = _as_messages("x", chat)
    ((_, flags, _, _),) = _items(chat, "chat", "x")
    assert [s.learned for s in preview.sequences["text"].segments] == flags
    pair = H.preference_example(1)
    pair["preferred_output"].insert(0, {"role": "tool", "content": "t", "tool_call_id": "1"})
    shown = _as_messages("x", pair)
    for name, (_, flags, _, _) in zip(("chosen", "rejected"), _items(pair, "preference", "x"), strict=True):
        marks = [s.learned for s in shown.sequences["prompt"].segments + shown.sequences[name].segments]
        assert marks == flags


def test_a_tokenizer_without_a_chat_template(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(model_dir, bare)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    for extra in bare.glob("chat_template.*"):
        extra.unlink()
    src = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "Q", "completion": "A"}])
    result = run_cli(capsys, "data", "preview", str(src), "-m", str(bare))
    assert result.code == 2
    assert "no chat template" in result.err and "Traceback" not in result.err
