"""Every malformed dataset of the corpus, through the CLI a user runs: ``anytune data validate`` and
``anytune jobs create`` both name the file, line and field, exit non-zero, and create nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.clitools import fake_jobs, jobs_in_store, run_cli
from tests.test_data_validate import CASES, CORPUS

ERRORS = sorted(name for name, case in CASES.items() if case[4] == "error")


def _flags(name: str) -> list[str]:
    rules = CASES[name][0]
    flags: list[str] = []
    if rules is not None and rules.method == "dpo":
        flags += ["--method", "dpo"]
    if rules is not None and rules.max_tokens_per_example is not None:
        flags += ["--max-length", str(rules.max_tokens_per_example)]
    return flags


def _where(name: str) -> str:
    _, _, line, field, _ = CASES[name]
    where = f"{CORPUS / name}:{line}" if line is not None else str(CORPUS / name)
    return f"{where}: {field}" if field else where


@pytest.mark.parametrize("name", ERRORS)
def test_jobs_create_refuses_bad_data(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(
        capsys,
        "jobs",
        "create",
        "--provider",
        "fake",
        "--base-model",
        "tiny",
        "--training-file",
        str(CORPUS / name),
        *_flags(name),
    )
    assert result.code == 3, result.err
    assert "Traceback" not in result.err
    assert result.err.startswith("invalid data: ")
    assert _where(name) in result.err, result.err
    home = Path(os.environ["ANYTUNE_HOME"])
    assert jobs_in_store(home) == 0
    assert fake_jobs(home) == 0


@pytest.mark.parametrize("name", ERRORS)
def test_data_validate_reports_line_and_field(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    flags = [f.replace("--max-length", "--max-tokens") for f in _flags(name)]
    result = run_cli(capsys, "data", "validate", str(CORPUS / name), *flags)
    assert result.code == 3, result.err
    assert _where(name) in result.err, result.err
    as_json = run_cli(capsys, "data", "validate", str(CORPUS / name), "--json", *flags)
    assert as_json.code == 3
    report = json.loads(as_json.out)
    assert report["ok"] is False
    assert CASES[name][1] in report["issue_counts"]


@pytest.mark.parametrize("name", ["valid_chat.jsonl", "valid_prompt_completion.jsonl"])
def test_valid_files_pass(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "data", "validate", str(CORPUS / name))
    assert result.code == 0, result.err
    assert "valid" in result.out
