"""The pure parts of bench/distributed_bench.py: the runs' settings, figures, ratios and JSON line.

The bench itself trains three jobs over several processes (minutes); these checks need neither
torch nor a run (the bench imports only the standard library until a run starts).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import load_script

BENCH = Path(__file__).parents[1] / "bench" / "distributed_bench.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script(BENCH, "bench_distributed")


def _figures(tps: float, rss: list[float] | None, loss: float, strategy: str | None) -> dict[str, object]:
    return {
        "tokens_per_second": tps,
        "train_seconds": 1.0,
        "wall_seconds": 2.0,
        "peak_rss_mib": (rss or [500.0])[0],
        "peak_rss_mib_per_rank": rss,
        "final_rss_mib_per_rank": [v - 100 for v in rss] if rss else None,
        "final_train_loss": loss,
        "steps": 4,
        "train_tokens": 100,
        "world_size": len(rss) if rss else 1,
        "strategy": strategy,
    }


def test_importing_the_bench_loads_no_torch(bench: ModuleType) -> None:
    assert bench.STRATEGIES == ("ddp", "fsdp", "zero2", "zero3")
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('b', {str(BENCH)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_every_run_trains_the_same_work_and_only_the_strategy_differs(bench: ModuleType) -> None:
    args = bench.parse_args(["--steps", "5", "--batch-size", "4", "--max-length", "64"])
    single, ddp, fsdp = (bench.job_fields(s, 2, args) for s in (None, "ddp", "fsdp"))
    assert single["hyperparameters"] == ddp["hyperparameters"] == fsdp["hyperparameters"]
    assert single["hyperparameters"]["max_steps"] == 5 and single["hyperparameters"]["batch_size"] == 4
    assert single["lora"] == ddp["lora"] == fsdp["lora"] and ddp["lora"]["dropout"] == 0.0
    assert "num_devices" not in single["local"] and "strategy" not in single["local"]
    assert ddp["local"] | {"strategy": "fsdp"} == fsdp["local"]
    assert (ddp["local"]["num_devices"], ddp["local"]["device"]) == (2, "cpu")


def test_figures_take_result_json_and_give_one_process_a_per_rank_list(bench: ModuleType) -> None:
    one = bench.figures({"tokens_per_second": 10.0, "peak_rss_mib": 580.0, "world_size": 1, "other": 1})
    assert one["peak_rss_mib_per_rank"] == [580.0] and "other" not in one
    two = bench.figures({"peak_rss_mib": 540.0, "peak_rss_mib_per_rank": [540.0, 600.0]})
    assert two["peak_rss_mib_per_rank"] == [540.0, 600.0]
    assert set(two) == set(bench.FIGURES)


def test_ratios_are_fsdp_over_ddp(bench: ModuleType) -> None:
    runs = {
        "ddp": _figures(1000.0, [500.0, 520.0], 5.0, "ddp"),
        "fsdp": _figures(750.0, [400.0, 480.0], 5.00001, "fsdp"),
    }
    r = bench.ratios(runs)
    assert r["tokens_per_second"] == 0.75
    assert r["max_rank_peak_rss"] == round(480 / 520, 3)
    assert r["mean_rank_peak_rss"] == round(440 / 510, 3)
    assert r["max_rank_final_rss"] == round(380 / 420, 3)
    assert r["final_train_loss_gap"] == pytest.approx(1e-5)
    assert bench.ratios({"ddp": runs["ddp"]}) == {}
    zero3 = {**runs, "zero3": _figures(500.0, [300.0, 320.0], 5.0, "zero3")}
    assert bench.ratios(zero3, "zero3")["tokens_per_second"] == 0.5
    assert bench.ratios(zero3, "zero3")["max_rank_peak_rss"] == round(320 / 520, 3)
    missing = {**runs, "fsdp": {**runs["fsdp"], "tokens_per_second": None, "peak_rss_mib_per_rank": None}}
    assert bench.ratios(missing)["tokens_per_second"] is None and bench.ratios(missing)["max_rank_peak_rss"] is None
    no_end = {**runs, "ddp": {**runs["ddp"], "final_rss_mib_per_rank": [None, None]}}
    assert bench.ratios(no_end)["max_rank_final_rss"] is None  # not Linux


def test_the_summary_is_one_json_line_with_its_settings(bench: ModuleType) -> None:
    args = bench.parse_args(["--processes", "2", "--steps", "3"])
    runs = {"single": _figures(100.0, None, 5.0, None), "ddp": _figures(1000.0, [500.0, 520.0], 5.0, "ddp")}
    line = bench.summary(args, {"hidden_size": 256}, runs)
    assert json.loads(json.dumps(line)) == line
    assert (line["bench"], line["processes"], line["steps"]) == ("distributed", 2, 3)
    assert line["ratios_fsdp_over_ddp"] == {}  # no fsdp run
    assert line["ratios_over_ddp"] == {}
    text = bench.table(runs)
    assert "single" in text and "500, 520" in text and "400, 420" in text and len(text.splitlines()) == 3


def test_chat_examples_are_deterministic_and_well_formed(bench: ModuleType) -> None:
    a, b = bench.chat_examples(5), bench.chat_examples(5)
    assert a == b and len(a) == 5
    assert all([m["role"] for m in e["messages"]] == ["user", "assistant"] for e in a)
