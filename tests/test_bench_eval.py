"""bench/eval_bench.py runs end to end (its smoke size): examples/s for loss and generation on both
sides, the ratios, whether the two sides agree, one JSON line."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "bench" / "eval_bench.py"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("torch", "peft")), reason="needs anytune[local]"
    ),
]


def test_the_smoke_run_reports_rates_ratios_and_agreement() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--smoke"], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["bench"] == "evaluation" and record["losses_agree"] is True
    assert record["answers_equal"] == record["examples"] == 6
    rates = record["examples_per_s"]
    assert record["ratio_loss"] == pytest.approx(rates["loss"]["anytune"] / rates["loss"]["loop"], rel=0.01)
    assert "answers equal: 6/6" in done.stdout
