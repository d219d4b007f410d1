"""The arithmetic behind bench/local_vs_trl.py's verdicts: FLOP counts, GPU peaks, what a step held.

The bench itself needs TRL and minutes; these checks need neither (the bench imports only the
standard library until a run starts), so a wrong FLOP count or peak cannot hide behind a GPU run.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).parents[1] / "bench" / "local_vs_trl.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_local_vs_trl", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and typing look modules up by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989e12),  # SXM
        ("NVIDIA H200", 989e12),
        ("NVIDIA GH200 480GB", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A100 80GB PCIe", 312e12),
    ],
)
def test_known_gpus_get_their_bf16_dense_peak(bench: ModuleType, name: str, peak: float) -> None:
    assert bench.gpu_peak_flops(name)[0] == peak


@pytest.mark.parametrize("name", ["NVIDIA H100 NVL", "NVIDIA H200 NVL", "NVIDIA GeForce RTX 4090", "NVIDIA L4"])
def test_unknown_gpus_leave_mfu_out_and_say_why(bench: ModuleType, name: str) -> None:
    peak, reason = bench.gpu_peak_flops(name)
    assert peak is None
    assert name in reason and "MFU omitted" in reason
    assert bench.mfu(1e15, 1.0, peak) is None


def test_parameter_counts_match_the_published_models(bench: ModuleType) -> None:
    # PEFT prints these trainable counts for r=16 on every linear layer of the real models.
    llama = bench.flop_counts(bench.SHAPES["llama8b"], 16)
    qwen = bench.flop_counts(bench.SHAPES["qwen0.5b"], 16)
    assert llama["adapter_params"] == 41_943_040
    assert qwen["adapter_params"] == 8_798_208
    # Meta-Llama-3-8B has 8,030,261,248 parameters: the frozen matmuls (LM head included), the input
    # embedding, and the RMSNorm weights (two per layer and the final one).
    shape = bench.SHAPES["llama8b"]
    embedding = shape["vocab_size"] * shape["hidden_size"]
    norms = (2 * shape["num_layers"] + 1) * shape["hidden_size"]
    assert llama["frozen_params"] + embedding + norms == 8_030_261_248


def test_lora_flops_are_4n_plus_6a_plus_attention_not_6n(bench: ModuleType) -> None:
    counts = bench.flop_counts(bench.SHAPES["llama8b"], 16)
    n, a = counts["frozen_params"], counts["adapter_params"]
    assert counts["per_token"] == 4 * n + 6 * a
    assert counts["per_token"] < 0.7 * 6 * n  # the full fine-tuning count would overstate a LoRA step by half
    assert counts["per_pair"] == 12 * 32 * 4096  # forward QK^T and AV (4 x hidden), backward twice that
    # One second, 10k tokens in sequences of 500 on an H100: MFU is the window's FLOPs over the peak.
    pairs = bench.causal_pairs([500] * 20)
    flops = 10_000 * counts["per_token"] + pairs * counts["per_pair"]
    assert bench.mfu(flops, 1.0, 989e12) == round(flops / 989e12, 4)
    assert 0.3 < flops / 989e12 < 0.33


def test_sequence_lengths_read_from_each_batch_layout(bench: ModuleType) -> None:
    assert bench.causal_pairs([1, 2, 3]) == 1 + 3 + 6
    assert bench.lengths_from_cu([0, 3, 7, 7]) == [3, 4]
    assert bench.lengths_from_positions([0, 1, 2, 0, 1, 0]) == [3, 2, 1]
    assert bench.lengths_from_positions([]) == []
    assert bench.lengths_from_mask([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]]) == [3, 2]


def test_window_counts_only_the_timed_steps(bench: ModuleType) -> None:
    per_step = [[100, 100], [10, 20, 30], [40], [5, 5, 5, 5]]  # warm-up step first, then three timed
    figures = bench.window_figures(per_step, 1, 3)
    assert figures == {"steps": 3, "tokens": 120, "pairs": (55 + 210 + 465) + 820 + 4 * 15, "examples_per_step": 2.67}
    assert bench.window_figures(per_step, 4, 3)["examples_per_step"] is None


def test_same_examples_compares_step_by_step(bench: ModuleType) -> None:
    ours = [[3, 5], [7]]
    assert bench.same_examples(ours, [[5, 3], [7]])  # order within a step does not matter
    assert not bench.same_examples(ours, [[3], [5, 7]])  # the same sequences, regrouped
    assert not bench.same_examples(ours, [[3, 5]])


def test_runs_default_by_device_and_bad_options_are_refused(bench: ModuleType) -> None:
    assert "unsloth" not in bench._parse([]).run_names
    assert bench._parse(["--device", "cuda"]).run_names[-1] == "unsloth"
    assert bench._parse(["--device", "cuda"]).model == "qwen0.5b"
    for argv in (["--steps", "3", "--warmup", "2"], ["--warmup", "0"], ["--runs", "anytune,axolotl"]):
        with pytest.raises(SystemExit):
            bench._parse(argv)
