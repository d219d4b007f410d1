"""``anytune data preview`` without a base model: the first examples, role by role, what is learned
marked as the trainer learns it; read lazily; errors as ``data validate`` gives them. (With a base
model's tokenizer: tests/local/test_data_preview_local.py.)"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from anytune._cli import preview_cmd
from tests.clitools import run_cli
from tests.conftest import run_python, write_csv, write_jsonl

QA = [{"question": f"What is {i} plus {i}?", "answer": f"{2 * i}.", "id": str(i)} for i in range(12)]
ALPACA = [{"instruction": f"Add {i} and {i}.", "input": f"{i}, {i}", "output": f"{2 * i}"} for i in range(12)]
TEMPLATE = "### Question: {question} ### Answer: {answer}"


def _preview_json(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    result = run_cli(capsys, "data", "preview", *args, "--json")
    assert result.code == 0, result.err
    data: list[dict[str, Any]] = json.loads(result.out)
    return data


def _learned(example: dict[str, Any]) -> list[str]:
    return [s["text"] for s in example["segments"] if s["learned"]]


def test_csv_with_a_template(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_csv(tmp_path / "qa.csv", QA)
    examples = _preview_json(capsys, str(src), "--template", TEMPLATE)
    assert len(examples) == 3  # the default
    first = examples[0]
    assert first["location"] == f"{src}:row 2"
    assert first["method"] == "sft"
    assert first["segments"] == [
        {"text": "### Question: What is 0 plus 0? ### Answer: ", "learned": False, "role": "user", "cut": False},
        {"text": "0.", "learned": True, "role": "assistant", "cut": False},
    ]
    assert (first["tokens"], first["learned_tokens"], first["notes"]) == (None, None, [])
    assert [e["location"] for e in examples] == [f"{src}:row {i}" for i in (2, 3, 4)]


def test_text_output_marks_learned_text_without_colour(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_csv(tmp_path / "qa.csv", QA)
    result = run_cli(capsys, "data", "preview", str(src), "--template", TEMPLATE, "-n", "1")
    assert result.code == 0, result.err
    assert f"example 1 · {src}:row 2" in result.out
    assert "user: ### Question: What is 0 plus 0? ### Answer: \n" in result.out
    assert "assistant: ⟦0.⟧" in result.out
    assert "example 2" not in result.out
    assert "--base-model MODEL shows the exact chat template and tokens" in result.err


def test_alpaca_jsonl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_jsonl(tmp_path / "alpaca.jsonl", ALPACA)
    (example,) = _preview_json(capsys, str(src), "-n", "1")
    assert example["location"] == f"{src}:line 1"
    assert [(s["role"], s["learned"]) for s in example["segments"]] == [("user", False), ("assistant", True)]
    assert example["segments"][0]["text"] == "Add 0 and 0.\n\n0, 0"
    assert _learned(example) == ["0"]


def test_only_assistant_messages_with_weight_are_learned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chat = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Bad answer.", "weight": 0},
            {"role": "user", "content": "Again"},
            {"role": "assistant", "content": "Good answer.", "weight": 1},
            {"role": "assistant", "content": "", "tool_calls": [_call("add", '{"a": 1}')]},
        ]
    }
    only_context = {
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "No", "weight": 0}]
    }
    first, second = _preview_json(capsys, str(write_jsonl(tmp_path / "chat.jsonl", [chat, only_context])))
    assert [s["learned"] for s in first["segments"]] == [False, False, False, False, True, True]
    assert _learned(first) == ["Good answer.", '→ add({"a": 1})']
    assert first["notes"] == []
    assert _learned(second) == []
    assert "nothing to learn" in second["notes"][0]


def _call(name: str, arguments: str) -> dict[str, Any]:
    return {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}


def test_preference_pairs_show_prompt_chosen_and_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."}]
    src = write_jsonl(tmp_path / "pref.jsonl", rows)
    (example,) = _preview_json(capsys, str(src))
    assert example["method"] == "dpo"
    assert [s["text"] for s in example["prompt"]["segments"]] == ["Capital of France?"]
    assert not any(s["learned"] for s in example["prompt"]["segments"])
    assert [(s["text"], s["learned"]) for s in example["chosen"]["segments"]] == [("Paris.", True)]
    assert [(s["text"], s["learned"]) for s in example["rejected"]["segments"]] == [("Lyon.", True)]
    text = run_cli(capsys, "data", "preview", str(src))
    assert "[prompt]\nuser: Capital of France?" in text.out
    assert "[chosen]\nassistant: ⟦Paris.⟧" in text.out and "[rejected]\nassistant: ⟦Lyon.⟧" in text.out


def test_only_the_first_rows_are_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "chat.jsonl"
    good = [{"prompt": f"Q{i}", "completion": f"A{i}"} for i in range(4)]
    write_jsonl(path, good)
    with path.open("a", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(r) for r in good) + "\n{not json\n")  # line 9
    examples = _preview_json(capsys, str(path), "-n", "4")
    assert [e["location"] for e in examples] == [f"{path}:line {i}" for i in (1, 2, 3, 4)]
    assert _learned(examples[3]) == ["A3"]
    broken = run_cli(capsys, "data", "preview", str(path), "-n", "10")
    assert broken.code == 3
    assert f"{path}:line 9" in broken.err and "Traceback" not in broken.err


def test_a_short_source_shows_what_it_has(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_csv(tmp_path / "qa.csv", QA[:2])
    assert len(_preview_json(capsys, str(src), "--template", TEMPLATE, "-n", "5")) == 2


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (["missing.csv"], 2, "file not found"),
        (["qa.csv"], 3, "cannot tell the shape"),
        (["qa.csv", "--columns", "prompt=nope,completion=answer"], 3, "column 'nope'"),
        (["qa.csv", "--template", "{nope} {answer}"], 3, "nope"),
        (["qa.csv", "--format", "sharegpt"], 3, "conversations"),
        (["qa.csv", "--template", TEMPLATE, "-n", "0"], 2, "-n must be at least 1"),
        (["qa.csv", "--template", TEMPLATE, "--max-length", "64"], 2, "--max-length needs --base-model"),
        (["qa.csv", "--template", TEMPLATE, "--base-model", "./no-such-model"], 2, "no-such-model"),
    ],
)
def test_bad_input(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    said: str,
) -> None:
    write_csv(tmp_path / "qa.csv", QA)
    monkeypatch.chdir(tmp_path)
    result = run_cli(capsys, "data", "preview", *args)
    assert result.code == code, result.err
    assert said in result.err
    assert "Traceback" not in result.err and result.out == ""


def test_a_base_model_without_the_local_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from anytune._data import preview

    monkeypatch.setattr(preview, "_TRAINER_NEEDS", ("anytune_no_such_module",))
    src = write_csv(tmp_path / "qa.csv", QA)
    result = run_cli(capsys, "data", "preview", str(src), "--template", TEMPLATE, "--base-model", str(tmp_path))
    assert result.code == 2
    assert 'pip install "anytune[local]"' in result.err


@pytest.mark.parametrize(("no_color", "marked"), [(False, False), (True, True)])
def test_colour_or_markers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_color: bool, marked: bool
) -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, color_system="standard", no_color=no_color, width=200)
    monkeypatch.setattr(preview_cmd, "out", console)
    src = write_csv(tmp_path / "qa.csv", QA)
    assert run_cli(capsys, "data", "preview", str(src), "--template", TEMPLATE, "-n", "1").code == 0
    shown = buffer.getvalue()
    assert ("⟦0.⟧" in shown) is marked
    assert ("\x1b[1;32m0." in shown) is not marked  # bold green


def test_data_from_the_source_is_not_markup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"question": "[bold]x[/bold]\x1b[2J", "answer": "[red]y"}]
    src = write_csv(tmp_path / "qa.csv", rows)
    result = run_cli(capsys, "data", "preview", str(src), "--template", TEMPLATE)
    assert result.code == 0, result.err
    assert "[bold]x[/bold]\\x1b[2J" in result.out and "⟦[red]y⟧" in result.out


def test_no_ml_stack_without_a_base_model(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "qa.csv", QA)
    code = (
        "import contextlib, io, sys\n"
        "from anytune._cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    main(['data', 'preview', {str(src)!r}, '--template', {TEMPLATE!r}])\n"
        "heavy = [m for m in ('torch', 'transformers', 'tokenizers', 'numpy', 'anytune.local_backend') "
        "if m in sys.modules]\n"
        "print('heavy:', heavy)\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert "heavy: []" in proc.stdout
