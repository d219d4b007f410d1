"""``anytune data convert`` and ``data validate`` on every local source and shape, as a user runs them:
what they print, their exit status, and that a failed conversion leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.clitools import run_cli
from tests.conftest import write_csv, write_jsonl

QA = [{"question": f"What is {i} plus {i}?", "answer": f"{2 * i}.", "id": str(i)} for i in range(12)]
ALPACA = [
    {"instruction": f"Add {i} and {i}.", "input": "" if i % 2 else f"{i}, {i}", "output": f"{2 * i}"} for i in range(12)
]


def test_convert_csv_with_a_template_gives_chat_that_validate_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, dst = write_csv(tmp_path / "qa.csv", QA), tmp_path / "chat.jsonl"
    result = run_cli(
        capsys, "data", "convert", str(src), str(dst), "--template", "### Question: {question} ### Answer: {answer}"
    )
    assert result.code == 0, result.err
    assert f"wrote 12 examples to {dst}" in result.err
    assert "notice read" in result.err and "columns not used: id" in result.err
    first = json.loads(dst.read_text(encoding="utf-8").splitlines()[0])
    assert first == {
        "messages": [
            {"role": "user", "content": "### Question: What is 0 plus 0? ### Answer: "},
            {"role": "assistant", "content": "0."},
        ]
    }
    checked = run_cli(capsys, "data", "validate", str(dst))
    assert checked.code == 0, checked.err
    assert "notice" not in checked.err  # canonical chat: validated as it is


def test_convert_with_columns_and_system_to_standard_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_csv(tmp_path / "qa.csv", QA[:2])
    result = run_cli(
        capsys,
        "data",
        "convert",
        str(src),
        "-",
        "--columns",
        "prompt=question,completion=answer",
        "--system",
        "Be brief.",
    )
    assert result.code == 0, result.err
    lines = [json.loads(line) for line in result.out.splitlines()]
    assert [m["messages"][0] for m in lines] == [{"role": "system", "content": "Be brief."}] * 2
    assert "wrote 2 examples to standard output" in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qa.csv"]


def test_validate_alpaca_jsonl_reads_it_as_alpaca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_jsonl(tmp_path / "alpaca.jsonl", ALPACA)
    result = run_cli(capsys, "data", "validate", str(src))
    assert result.code == 0, result.err
    assert result.err.splitlines()[0] == (
        f"notice read {src} as Alpaca (instruction/input/output), converted to OpenAI chat examples"
    )
    as_json = json.loads(run_cli(capsys, "data", "validate", str(src), "--json").out)
    assert as_json["ok"] is True and as_json["read_as"] == "alpaca" and as_json["file"] == str(src)
    assert any("read" in n and "Alpaca" in n for n in as_json["notices"])


def test_convert_alpaca_then_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = write_jsonl(tmp_path / "alpaca.jsonl", ALPACA), tmp_path / "chat.jsonl"
    result = run_cli(capsys, "data", "convert", str(src), str(dst))
    assert result.code == 0, result.err
    assert "read" in result.err and "as Alpaca" in result.err
    assert run_cli(capsys, "data", "validate", str(dst)).code == 0


def test_validate_csv_with_a_bad_row_reports_the_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [dict(r) for r in QA]
    rows[6]["answer"] = ""
    src = write_csv(tmp_path / "qa.csv", rows)
    result = run_cli(capsys, "data", "validate", str(src), "--columns", "prompt=question,completion=answer")
    assert result.code == 3
    assert f"error {src}:row 8: messages[1].content: content is empty" in result.err
    assert "Traceback" not in result.err
    report = json.loads(
        run_cli(capsys, "data", "validate", str(src), "--columns", "prompt=question,completion=answer", "--json").out
    )
    [issue] = [i for i in report["issues"] if i["code"] == "empty_content"]
    assert issue["location"] == f"{src}:row 8" and issue["line"] == 8 and issue["field"] == "messages[1].content"


def test_validate_unknown_columns_says_which_option_reads_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_jsonl(tmp_path / "qa.jsonl", QA)
    result = run_cli(capsys, "data", "validate", str(src))
    assert result.code == 3
    first = result.err.splitlines()[0]
    assert first.startswith(f"notice {src}: this is not OpenAI chat (messages): its columns (question, answer, id)")
    assert f"`anytune data convert {src} OUT --columns prompt=question,completion=answer`" in first
    fixed = run_cli(capsys, "data", "validate", str(src), "--columns", "prompt=question,completion=answer")
    assert fixed.code == 0, fixed.err


def test_validate_preference_data_with_the_right_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_jsonl(
        tmp_path / "pref.jsonl", [{"prompt": f"q{i}", "chosen": "yes", "rejected": "no"} for i in range(12)]
    )
    wrong = run_cli(capsys, "data", "validate", str(src))
    assert wrong.code == 3 and "--method dpo" in wrong.err and "Traceback" not in wrong.err
    right = run_cli(capsys, "data", "validate", str(src), "--method", "dpo")
    assert right.code == 0, right.err
    assert "TRL preference (prompt/chosen/rejected), converted to OpenAI DPO examples" in right.err


def test_validate_a_datasets_folder_by_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "dd"
    parts = {"train": datasets.Dataset.from_list(ALPACA), "test": datasets.Dataset.from_list(ALPACA[:2])}
    datasets.DatasetDict(parts).save_to_disk(str(folder))
    assert run_cli(capsys, "data", "validate", str(folder)).code == 0
    test = run_cli(capsys, "data", "validate", str(folder), "--split", "test", "--min-examples", "2")
    assert test.code == 0, test.err
    missing = run_cli(capsys, "data", "validate", str(folder), "--split", "dev")
    assert missing.code == 2
    assert missing.err.strip() == (
        f"configuration error: field 'FILE': {folder} has no split 'dev'; its splits: train, test (choose one of them)"
    )


def test_validate_parquet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    src = tmp_path / "alpaca.parquet"
    pq.write_table(pa.Table.from_pylist(ALPACA), src)
    result = run_cli(capsys, "data", "validate", str(src))
    assert result.code == 0, result.err
    assert "as Alpaca" in result.err


@pytest.mark.parametrize(
    ("name", "content", "args", "code", "fragment"),
    [
        (
            "mixed.jsonl",
            '{"instruction": "i", "output": "o"}\n{"messages": [{"role": "user", "content": "x"}]}\n',
            (),
            3,
            ":line 2: this row is OpenAI chat (messages) but the source is read as Alpaca",
        ),
        (
            "qa.csv",
            "question,answer\nq,a\n",
            ("--columns", "prompt=question,completion=reply"),
            3,
            ":row 2: reply: column",
        ),
        (
            "qa.csv",
            "question,answer\nq,a\n",
            ("--template", "{question} {nope}"),
            3,
            ":row 2: nope: text_template field",
        ),
        (
            "qa.csv",
            "question,answer\nq,a\nonly\n",
            ("--prompt-template", "{question}", "--columns", "completion=answer"),
            3,
            ":row 3: answer: row has 1 field",
        ),
        ("qa.csv", "question,answer\n", ("--columns", "prompt=question,completion=answer"), 3, "has no rows"),
        (
            "qa.txt",
            "question,answer\nq,a\n",
            ("--columns", "prompt=question,completion=answer"),
            2,
            "cannot read a file with extension '.txt'",
        ),
        ("qa.json", '{"a": 1}', (), 3, "a JSON object that holds no records"),
        (
            "qa.csv",
            "question,answer\nq,a\n",
            ("--template", "{question} {answer}", "--format", "alpaca"),
            2,
            "templates build",
        ),
        ("qa.csv", "question,answer\nq,a\n", ("--columns", "prompt"), 2, "expected FIELD=COLUMN pairs"),
    ],
)
def test_convert_failures_leave_no_output(
    name: str,
    content: str,
    args: tuple[str, ...],
    code: int,
    fragment: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = tmp_path / name
    src.write_text(content, encoding="utf-8")
    dst = tmp_path / "out.jsonl"
    result = run_cli(capsys, "data", "convert", str(src), str(dst), *args)
    assert result.code == code, result.err
    assert fragment in result.err and "Traceback" not in result.err
    assert not dst.exists() and sorted(p.name for p in tmp_path.iterdir()) == [name]
    to_stdout = run_cli(capsys, "data", "convert", str(src), "-", *args)
    assert to_stdout.code == code and to_stdout.out == ""


def test_convert_keeps_refusing_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = write_csv(tmp_path / "qa.csv", QA), tmp_path / "chat.jsonl"
    dst.write_text("precious\n", encoding="utf-8")
    args = ("data", "convert", str(src), str(dst), "--columns", "prompt=question,completion=answer")
    assert run_cli(capsys, *args).code == 2 and dst.read_text(encoding="utf-8") == "precious\n"
    assert run_cli(capsys, *args, "--force").code == 0 and dst.read_text(encoding="utf-8").count("\n") == 12


def test_prompt_completion_jsonl_converts_as_before(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The prompt/completion converter of before: an unknown key is an error, named by line.
    src = write_jsonl(
        tmp_path / "pc.jsonl", [{"prompt": "p", "completion": "c"}, {"prompt": "p", "completion": "c", "x": 1}]
    )
    result = run_cli(capsys, "data", "convert", str(src), str(tmp_path / "out.jsonl"))
    assert result.code == 3 and f"{src}:2: x: unknown key 'x'" in result.err
    assert "1 line cannot be converted" in result.err
