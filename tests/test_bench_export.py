"""bench/export_bench.py runs end to end (its smoke size) and says what a reader needs: tokens/s of
each run, the ratios, whether the three runs produced the same tokens, one JSON line."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "bench" / "export_bench.py"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("torch", "peft", "olive", "onnxruntime_genai")),
        reason="needs anytune[local,onnx]",
    ),
]


def test_the_smoke_run_reports_speeds_ratios_and_equal_tokens() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--smoke"], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["bench"] == "export_generation" and record["same_tokens"] is True
    assert set(record["tokens_per_s"]) == {"onnx", "peft", "merged"}
    assert all(v > 0 for v in record["tokens_per_s"].values())
    assert record["ratio_onnx_vs_merged"] == pytest.approx(
        record["tokens_per_s"]["onnx"] / record["tokens_per_s"]["merged"], rel=0.01
    )
    assert "onnx vs peft:" in done.stdout
