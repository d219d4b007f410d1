"""``anytune demo``: the embedded default runs end to end and the fine-tuned model is better."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from anytune._cli import demo_cmd
from tests.clitools import run_cli

ROOT = Path(__file__).parents[2]


def test_the_packaged_demo_data_is_the_sample_data() -> None:
    # The package ships a copy for installs without the repository; it must not drift.
    for name in ("train.jsonl", "valid.jsonl"):
        shipped = ROOT / "sdk" / "_cli" / f"demo_{name}"
        assert shipped.read_bytes() == (ROOT / "samples" / "data" / name).read_bytes(), name
    train, valid = demo_cmd.demo_data()
    assert train.parent == ROOT / "samples" / "data" and valid.is_file()


def test_without_a_checkout_the_demo_uses_the_shipped_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_cmd, "__file__", "/nowhere/site-packages/anytune/_cli/demo_cmd.py")
    train, valid = demo_cmd.demo_data()
    assert train.name == "demo_train.jsonl" and train.is_file() and valid.is_file()


def test_demo_runs_end_to_end_and_lowers_the_validation_loss(
    capsys: pytest.CaptureFixture[str], anytune_home: Path
) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    result = run_cli(capsys, "demo", "--fast", "--samples", "1")
    assert result.code == 0, result.out + result.err
    text = result.out
    match = re.search(r"base ([\d.]+) -> fine-tuned ([\d.]+)", text)
    assert match, text
    base, tuned = float(match[1]), float(match[2])
    assert tuned < base * 0.9, text
    assert "smoke-size model" in text
    assert "anytune demo --base-model Qwen/Qwen2.5-0.5B-Instruct" in text
    assert "sample answers" in text
    adapter = re.search(r"adapter\s+(\S+)", text)
    assert adapter and (Path(adapter[1]) / "adapter_config.json").is_file()
    assert Path(adapter[1]).is_relative_to(anytune_home)
    assert (anytune_home / "demo" / "tiny-model" / "config.json").is_file()
