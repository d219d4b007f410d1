"""bench/serve_bench.py runs end to end (its smoke size): chat through the server over HTTP (whole and
streamed) against the model called directly, the same answers, job reads per second, one JSON line."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "bench" / "serve_bench.py"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("torch", "peft", "fastapi", "uvicorn", "openai")),
        reason="needs anytune[local,serve,openai]",
    ),
]


def test_the_smoke_run_reports_latency_overhead_and_read_rates() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--smoke"], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["bench"] == "serve" and record["requests"] == 2
    assert record["overhead_served"] == pytest.approx(record["chat_ms_served"] / record["chat_ms_direct"], rel=0.02)
    assert record["job_reads_per_s_http"] > 0 and record["job_reads_per_s_direct"] > 0
    assert "server overhead" in done.stdout
