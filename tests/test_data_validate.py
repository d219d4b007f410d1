"""Dataset validation: every check against a malformed file, streaming, caps, DPO, parallel scan."""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from anytune._data import _scan
from anytune._data.validate import (
    DatasetReport,
    DatasetRules,
    ValidationIssue,
    check_dataset,
    validate_file,
)
from anytune.errors import DataValidationError

CORPUS = Path(__file__).parent / "data_corpus"
DPO = DatasetRules(method="dpo")

# file -> (rules, expected code, line, field, severity). Every file but the valid ones holds exactly
# one problem among otherwise valid examples, so the report must hold exactly that issue.
CASES: dict[str, tuple[DatasetRules | None, str, int | None, str | None, str]] = {
    "bad_json.jsonl": (None, "bad_json", 3, None, "error"),
    "not_utf8.jsonl": (None, "not_utf8", 5, None, "error"),
    "not_object.jsonl": (None, "not_object", 2, None, "error"),
    "empty_file.jsonl": (None, "empty_file", None, None, "error"),
    "blank_line.jsonl": (None, "blank_line", 4, None, "warning"),
    "bom.jsonl": (None, "utf8_bom", 1, None, "warning"),
    "missing_messages.jsonl": (None, "missing_messages", 6, "messages", "error"),
    "empty_messages.jsonl": (None, "missing_messages", 5, "messages", "error"),
    "messages_not_list.jsonl": (None, "messages_not_list", 3, "messages", "error"),
    "message_not_object.jsonl": (None, "message_not_object", 4, "messages[1]", "error"),
    "unknown_role.jsonl": (None, "unknown_role", 7, "messages[1].role", "error"),
    "missing_role.jsonl": (None, "missing_role", 2, "messages[0].role", "error"),
    "unknown_key_example.jsonl": (None, "unknown_key", 8, "labels", "error"),
    "unknown_key_message.jsonl": (None, "unknown_key", 9, "messages[2].lang", "error"),
    "missing_content.jsonl": (None, "missing_content", 3, "messages[0].content", "error"),
    "null_content.jsonl": (None, "missing_content", 10, "messages[2].content", "error"),
    "empty_content.jsonl": (None, "empty_content", 4, "messages[2].content", "error"),
    "whitespace_content.jsonl": (None, "empty_content", 5, "messages[0].content", "error"),
    "bad_content.jsonl": (None, "bad_content", 6, "messages[0].content", "error"),
    "bad_content_part.jsonl": (None, "bad_content", 2, "messages[0].content[0]", "error"),
    "no_assistant_message.jsonl": (None, "no_assistant_message", 11, "messages", "error"),
    "bad_weight.jsonl": (None, "bad_weight", 3, "messages[1].weight", "error"),
    "weight_on_user.jsonl": (None, "bad_weight", 4, "messages[0].weight", "error"),
    "all_weights_zero.jsonl": (None, "no_trainable_message", 5, "messages", "warning"),
    "bad_name.jsonl": (None, "bad_name", 6, "messages[0].name", "error"),
    "bad_tool_call_arguments.jsonl": (
        None,
        "bad_tool_call",
        7,
        "messages[1].tool_calls[0].function.arguments",
        "error",
    ),
    "bad_tool_call_type.jsonl": (None, "bad_tool_call", 3, "messages[1].tool_calls[0].type", "error"),
    # 900 levels of arrays in a tool call's arguments: deeper than MAX_DEPTH, within orjson's limit.
    "too_deep.jsonl": (None, "too_deep", 7, "messages[1].tool_calls[0].function.arguments", "error"),
    "tool_call_id_unmatched.jsonl": (None, "bad_tool_call", 8, "messages[2].tool_call_id", "error"),
    "tool_reply_without_id.jsonl": (None, "bad_tool_call", 2, "messages[2].tool_call_id", "error"),
    "bad_tools.jsonl": (None, "bad_tools", 5, "tools[0].function.name", "error"),
    "bad_parallel_tool_calls.jsonl": (None, "bad_tools", 9, "parallel_tool_calls", "error"),
    "mixed_formats.jsonl": (None, "mixed_formats", 7, None, "error"),
    "too_few_examples.jsonl": (None, "too_few_examples", None, None, "error"),
    "too_many_tokens.jsonl": (DatasetRules(max_tokens_per_example=100), "too_many_tokens", 5, None, "error"),
    "pc_missing_completion.jsonl": (None, "missing_field", 3, "completion", "error"),
    "dpo_example_in_sft.jsonl": (None, "wrong_format", 4, None, "error"),
    "dpo_missing_field.jsonl": (DPO, "missing_dpo_field", 6, "non_preferred_output", "error"),
    "dpo_wrong_role.jsonl": (DPO, "wrong_role", 2, "preferred_output[0].role", "error"),
    "dpo_missing_input_messages.jsonl": (DPO, "missing_messages", 3, "input.messages", "error"),
    "chat_example_in_dpo.jsonl": (DPO, "wrong_format", 5, None, "error"),
}
# Problems that come with a second, consequential issue.
ALSO: dict[str, set[str]] = {
    "mixed_formats.jsonl": set(),
    "dpo_example_in_sft.jsonl": {"mixed_formats"},
    "chat_example_in_dpo.jsonl": {"mixed_formats"},
}
VALID = {"valid_chat.jsonl": None, "valid_dpo.jsonl": DPO, "valid_prompt_completion.jsonl": None}


def test_corpus_is_complete() -> None:
    files = {p.name for p in CORPUS.glob("*.jsonl")}
    assert files == set(CASES) | set(VALID)
    assert len(CASES) >= 20


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_file_reports_code_line_and_field(name: str) -> None:
    rules, code, line, where, severity = CASES[name]
    report = validate_file(CORPUS / name, rules)
    main = [i for i in report.issues if i.code == code]
    assert main, f"{name}: expected {code}, got {[str(i) for i in report.issues]}"
    issue = main[0]
    assert (issue.line, issue.field, issue.severity) == (line, where, severity), str(issue)
    others = {i.code for i in report.issues} - {code}
    assert others == ALSO.get(name, set()), [str(i) for i in report.issues]
    assert report.ok == (severity == "warning")
    assert issue.file == str(CORPUS / name)
    assert report.issue_counts[code] == 1


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_files_have_no_issues(name: str) -> None:
    report = validate_file(CORPUS / name, VALID[name])
    assert report.issues == [], [str(i) for i in report.issues]
    assert report.ok and report.errors == report.warnings == 0
    assert report.examples == report.valid_examples == 12
    assert report.tokens is not None and report.tokens.examples == 12


def test_formats_detected() -> None:
    assert validate_file(CORPUS / "valid_chat.jsonl").format == "chat"
    assert validate_file(CORPUS / "valid_dpo.jsonl", DPO).format == "preference"
    assert validate_file(CORPUS / "valid_prompt_completion.jsonl").format == "prompt_completion"
    assert validate_file(CORPUS / "empty_file.jsonl").format == "unknown"


def test_issue_str() -> None:
    issue = ValidationIssue(
        file="train.jsonl", line=12, field="messages[2].content", code="empty_content", message="content is empty"
    )
    assert str(issue) == "train.jsonl:12: messages[2].content: content is empty"
    file_level = ValidationIssue(file="t.jsonl", line=None, field=None, code="x", message="m", severity="warning")
    assert str(file_level) == "t.jsonl: m (warning)"
    with pytest.raises(ValidationError):  # frozen
        issue.line = 3  # type: ignore[misc]


def test_keeps_going_after_errors(tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    lines = [json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})] * 12
    lines[1] = "{oops"
    lines[5] = json.dumps({"messages": [{"role": "wizard", "content": ""}, {"role": "assistant", "content": "a"}]})
    lines[9] = "17"
    path.write_text("\n".join(lines) + "\n")
    report = validate_file(path)
    got = [(i.line, i.code, i.field) for i in report.issues]
    assert got == [
        (2, "bad_json", None),
        (6, "unknown_role", "messages[0].role"),
        (6, "empty_content", "messages[0].content"),
        (10, "not_object", None),
        (None, "too_few_examples", None),  # 9 valid examples < 10; file-level issues come last
    ]
    assert report.examples == 12 and report.valid_examples == 9


def test_max_issues_caps_list_but_counts_everything(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(f"not json {i}\n" for i in range(500)))
    seen: list[ValidationIssue] = []
    report = validate_file(path, max_issues=7, on_issue=seen.append)
    assert len(report.issues) == 7
    assert [i.line for i in report.issues] == list(range(1, 8))
    assert seen == report.issues
    assert report.issue_counts == {"bad_json": 500, "too_few_examples": 1}
    assert report.errors == 501 and not report.ok


def test_check_dataset_raises_with_lines_and_count(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError) as info:
        check_dataset(CORPUS / "unknown_role.jsonl")
    msg = str(info.value)
    assert "unknown_role.jsonl" in msg and "1 error" in msg
    assert "unknown_role.jsonl:7: messages[1].role:" in msg
    assert [i.code for i in info.value.issues] == ["unknown_role"]
    report = check_dataset(CORPUS / "blank_line.jsonl")  # warnings only: no raise
    assert isinstance(report, DatasetReport) and report.warnings == 1


def test_dpo_tokens_and_wrong_method() -> None:
    report = validate_file(CORPUS / "valid_dpo.jsonl", DPO)
    assert report.ok and report.tokens is not None
    # DPO in an SFT run: every line is the wrong format
    sft = validate_file(CORPUS / "valid_dpo.jsonl")
    assert sft.issue_counts["wrong_format"] == 12


def test_prompt_completion_tokens_equal_converted_chat(tmp_path: Path) -> None:
    from anytune._data.convert import convert_prompt_completion

    src = CORPUS / "valid_prompt_completion.jsonl"
    dst = tmp_path / "chat.jsonl"
    convert_prompt_completion(src, dst)
    a, b = validate_file(src), validate_file(dst)
    assert a.tokens == b.tokens


def test_missing_file_raises() -> None:
    with pytest.raises(FileNotFoundError):
        validate_file(CORPUS / "nope.jsonl")


# --- streaming over byte ranges -----------------------------------------------------------------


def _write_mixed(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            r = rng.random()
            if r < 0.03:
                f.write("{broken\n")
            elif r < 0.05:
                f.write("\n")
            elif r < 0.08:
                f.write(json.dumps({"messages": [{"role": "robot", "content": "x"}]}) + "\n")
            else:
                words = " ".join(
                    rng.choice(["alpha", "beta", "gamma", "δέλτα", "数据"]) for _ in range(rng.randint(1, 400))
                )
                f.write(
                    json.dumps(
                        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": words}]}
                    )
                    + "\n"
                )


def test_byte_ranges_read_every_line_once(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    _write_mixed(path, 300, seed=1)
    data = path.read_bytes()
    expected = data.splitlines(keepends=True)
    for n in (1, 2, 3, 7, 50, 299):
        bounds = [len(data) * k // n for k in range(n + 1)]
        got: list[bytes] = []
        with path.open("rb") as f:
            for a, b in itertools.pairwise(bounds):
                got.extend(_scan.iter_range(f, a, b))
        assert got == expected, n


def _comparable(r: DatasetReport) -> dict[str, Any]:
    return r.model_dump(exclude={"seconds", "workers"})


@pytest.mark.parametrize("fork", [True, False], ids=["fork", "spawn"])
def test_parallel_scan_equals_single_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fork: bool) -> None:
    path = tmp_path / "d.jsonl"
    _write_mixed(path, 400 if fork else 150, seed=2)
    rules = DatasetRules(provider="openai", model="gpt-4o-mini", max_tokens_per_example=300)
    single = validate_file(path, rules, max_issues=10_000)
    assert single.workers == 1

    monkeypatch.setattr(_scan, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(_scan, "MIN_CHUNK_BYTES", 4096)
    monkeypatch.setenv("ANYTUNE_DATA_WORKERS", "2")
    if not fork:
        monkeypatch.setattr(_scan, "fork_is_safe", lambda: False)
    seen: list[ValidationIssue] = []
    multi = validate_file(path, rules, max_issues=10_000, on_issue=seen.append)
    assert multi.workers == 2
    assert _comparable(multi) == _comparable(single)
    assert seen == single.issues
    assert {"bad_json", "blank_line", "unknown_role", "too_many_tokens"} <= set(single.issue_counts)

    capped = validate_file(path, rules, max_issues=5)
    assert capped.issues == single.issues[:5]
    assert capped.issue_counts == single.issue_counts


def test_report_memory_is_bounded_by_distinct_lengths(tmp_path: Path) -> None:
    # 3000 examples, all the same length, all with an error: the scan keeps one length entry and the
    # capped issue list, whatever the number of lines.
    path = tmp_path / "same.jsonl"
    line = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}]})
    path.write_text((line + "\n") * 3000)
    config = _scan.ScanConfig(max_issues=10)
    result = _scan.scan_range(str(path), 0, None, config, len)
    assert len(result.lengths) == 1 and len(result.issues) == 10
    assert result.counts["unknown_role"] == 3000 and result.counts["no_assistant_message"] == 3000
    report = validate_file(path, max_issues=10)
    assert len(report.issues) == 10 and report.errors == 6001


def test_import_is_light() -> None:
    code = (
        "import sys, anytune, anytune._data, anytune._data.validate, anytune._data.convert;"
        "bad = [m for m in ('bpe_openai', 'tokenizers') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""}
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("method", "example", "fmt", "code"),
    [
        # An SFT dataset reads prompt/completion before preference keys; a DPO one the other way.
        ("sft", {"prompt": "p", "completion": "c", "input": {}}, "prompt_completion", "unknown_key"),
        (
            "dpo",
            {"messages": [], "input": {"messages": [{"role": "user", "content": "q"}]}},
            "preference",
            "unknown_key",
        ),
    ],
)
def test_a_mixed_example_is_read_as_the_method_expects(
    tmp_path: Path, method: str, example: dict[str, Any], fmt: str, code: str
) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps(example) + "\n")
    report = validate_file(path, DatasetRules(method=method, min_examples=1))
    assert code in {i.code for i in report.issues}
    assert "wrong_format" not in {i.code for i in report.issues}
    assert report.format == fmt
