"""Prompt/completion -> chat conversion: output shape, atomicity, error reporting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anytune._data.convert import convert_prompt_completion
from anytune._data.validate import validate_file
from anytune.errors import DataValidationError

CORPUS = Path(__file__).parent / "data_corpus"


def test_converts_to_valid_chat(tmp_path: Path) -> None:
    dst = tmp_path / "chat.jsonl"
    n = convert_prompt_completion(CORPUS / "valid_prompt_completion.jsonl", dst, system="Translate.")
    assert n == 12
    rows = [json.loads(line) for line in dst.read_text("utf-8").splitlines()]
    assert len(rows) == 12
    assert rows[0] == {
        "messages": [
            {"role": "system", "content": "Translate."},
            {"role": "user", "content": "Translate to French: cat number 1"},
            {"role": "assistant", "content": "chat numéro 1"},
        ]
    }
    report = validate_file(dst)
    assert report.ok and report.format == "chat" and report.examples == 12


def test_metadata_kept_and_blank_lines_skipped(tmp_path: Path) -> None:
    src = tmp_path / "pc.jsonl"
    src.write_text('{"prompt": "a", "completion": "b", "metadata": {"id": 1}}\n\n{"prompt": "c", "completion": "d"}\n')
    dst = tmp_path / "out.jsonl"
    assert convert_prompt_completion(src, dst) == 2
    rows = [json.loads(line) for line in dst.read_text().splitlines()]
    assert rows[0]["metadata"] == {"id": 1} and "metadata" not in rows[1]
    assert rows[1]["messages"] == [{"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]


def test_failure_names_lines_and_leaves_dst_untouched(tmp_path: Path) -> None:
    src = tmp_path / "pc.jsonl"
    src.write_text(
        '{"prompt": "a", "completion": "b"}\n'
        '{"prompt": "a"}\n'
        "{nope\n"
        '{"prompt": "a", "completion": "b", "extra": 1}\n'
        '{"prompt": "a", "completion": "b"}\n'
    )
    dst = tmp_path / "existing.jsonl"
    dst.write_bytes(b"precious\n")
    with pytest.raises(DataValidationError) as info:
        convert_prompt_completion(src, dst)
    err = info.value
    assert [(i.line, i.code, i.field) for i in err.issues] == [
        (2, "missing_field", "completion"),
        (3, "bad_json", None),
        (4, "unknown_key", "extra"),
    ]
    assert "3 lines cannot be converted" in str(err) and "pc.jsonl:2: completion" in str(err)
    assert dst.read_bytes() == b"precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.jsonl", "pc.jsonl"]  # no temp left


def test_failure_without_existing_dst_creates_nothing(tmp_path: Path) -> None:
    src = tmp_path / "pc.jsonl"
    src.write_text('["not", "an", "object"]\n')
    dst = tmp_path / "out.jsonl"
    with pytest.raises(DataValidationError, match=r"pc\.jsonl:1"):
        convert_prompt_completion(src, dst)
    assert not dst.exists()


def test_in_place_conversion(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes((CORPUS / "valid_prompt_completion.jsonl").read_bytes())
    assert convert_prompt_completion(path, path) == 12
    assert validate_file(path).format == "chat"


def test_empty_system_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError):
        convert_prompt_completion(CORPUS / "valid_prompt_completion.jsonl", tmp_path / "x.jsonl", system=" ")
