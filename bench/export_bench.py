"""Benchmark: generation with an ONNX export (ONNX Runtime GenAI) against PyTorch, on the CPU.

    python bench/export_bench.py [--hidden 512] [--layers 8] [--new-tokens 64] [--prompts 8] [--smoke]

One model and adapter, built here from a seed (a Llama-shaped decoder, LoRA r=16 on every linear
layer, random B so the adapter changes the output), exported by anytune to ONNX (Olive, the adapter
kept as an ``.onnx_adapter`` file) and merged. Three runs generate the same greedy tokens for the same
chat prompts, one prompt at a time (batch 1, as a chat user would), each after one warm-up prompt:

* ``onnx``: ``FineTunedModel.load(format="onnx")``, ONNX Runtime GenAI with the adapter file active;
* ``peft``: what ``FineTunedModel.load()`` gives, transformers + peft, the adapter unmerged;
* ``merged``: the merged export loaded with plain transformers (the fastest PyTorch path).

Every run decodes exactly ``--new-tokens`` tokens (end of text suppressed on both sides, through
``min_length``/``min_new_tokens``), so tokens/s compares like with like, and the bench checks the
three produce the same tokens (``same_tokens``). PyTorch uses every core (``torch.get_num_threads``);
ONNX Runtime its default thread pool (also every core). Prints a table, the ratios, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROMPTS = [
    "What is the capital of France?",
    "Describe the sea in a few words.",
    "Name a primary colour.",
    "How many days are in a week?",
    "What is two plus three?",
    "Write a short greeting.",
    "Summarise: the quick brown fox jumps over the lazy dog.",
    "Give me one word that rhymes with light.",
]


def build(root: Path, hidden: int, layers: int) -> tuple[Path, Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from anytune.local_backend.tiny import build_tiny_model

    heads = max(2, hidden // 64)
    base = build_tiny_model(
        root / "base", hidden_size=hidden, num_layers=layers, num_heads=heads, num_kv_heads=max(1, heads // 2)
    )
    model = AutoModelForCausalLM.from_pretrained(base)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=targets))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    peft_model.save_pretrained(root / "adapter")
    return base, root / "adapter"


def timed(generate: Callable[[list[int]], list[int]], prompts: list[list[int]]) -> tuple[float, list[list[int]]]:
    generate(prompts[0])  # warm-up: kernels, allocator, caches
    outputs: list[list[int]] = []
    start = time.perf_counter()
    for ids in prompts:
        outputs.append(generate(ids))
    return time.perf_counter() - start, outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=len(PROMPTS))
    parser.add_argument("--smoke", action="store_true", help="a tiny model and 4 tokens: checks the plumbing")
    args = parser.parse_args(argv)
    if args.smoke:
        args.hidden, args.layers, args.new_tokens, args.prompts = 64, 2, 4, 2

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from anytune import FineTunedModel

    with tempfile.TemporaryDirectory(prefix="anytune-export-bench-") as tmp:
        root = Path(tmp)
        base, adapter = build(root, args.hidden, args.layers)
        result = FineTunedModel(provider="local", job_ref="local:bench", adapter_path=str(adapter))
        t0 = time.perf_counter()
        onnx_export = result.export("onnx", str(root / "onnx"))
        export_onnx_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        merged_export = result.export("merged", str(root / "merged"))
        export_merged_s = time.perf_counter() - t0

        onnx_model: Any = result.load(format="onnx", path=onnx_export.path)
        prompts = [onnx_model.prompt_ids(p) for p in (PROMPTS * 4)[: args.prompts]]
        n = args.new_tokens

        def onnx_generate(ids: list[int]) -> list[int]:
            new: list[int] = onnx_model.generate_ids(ids, max_new_tokens=n, min_new_tokens=n)
            return new

        def torch_generate(model: Any) -> Callable[[list[int]], list[int]]:
            model.generation_config.bad_words_ids = None  # ONNX Runtime GenAI has no banned-token list

            def run(ids: list[int]) -> list[int]:
                with torch.inference_mode():
                    output = model.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False)
                return [int(t) for t in output[0, len(ids) :]]

            return run

        peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter)).eval()
        merged = AutoModelForCausalLM.from_pretrained(merged_export.path).eval()
        runs = {
            "onnx": timed(onnx_generate, prompts),
            "peft": timed(torch_generate(peft_model), prompts),
            "merged": timed(torch_generate(merged), prompts),
        }
    tokens = n * len(prompts)
    rate = {name: tokens / seconds for name, (seconds, _) in runs.items()}
    same = runs["onnx"][1] == runs["merged"][1] == runs["peft"][1]
    params = sum(p.numel() for p in merged.parameters())
    print(
        f"model: hidden {args.hidden}, {args.layers} layers, {params / 1e6:.1f} M parameters; LoRA r=16 on all linears"
    )
    threads = f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}"
    print(f"{len(prompts)} prompts x {n} new tokens, greedy, batch 1; {threads}")
    print(f"export: onnx {export_onnx_s:.1f} s, merged {export_merged_s:.1f} s")
    print(f"{'run':8} {'tokens/s':>10} {'ms/token':>9}")
    for name in runs:
        print(f"{name:8} {rate[name]:10.1f} {1000 / rate[name]:9.2f}")
    ratio_peft = rate["onnx"] / rate["peft"]
    ratio_merged = rate["onnx"] / rate["merged"]
    print(f"onnx vs peft: {ratio_peft:.2f}x; onnx vs merged PyTorch: {ratio_merged:.2f}x; same tokens: {same}")
    record = {
        "bench": "export_generation",
        "hidden": args.hidden,
        "layers": args.layers,
        "parameters_m": round(params / 1e6, 2),
        "prompts": len(prompts),
        "new_tokens": n,
        "tokens_per_s": {k: round(v, 1) for k, v in rate.items()},
        "ratio_onnx_vs_peft": round(ratio_peft, 3),
        "ratio_onnx_vs_merged": round(ratio_merged, 3),
        "same_tokens": same,
        "export_s": {"onnx": round(export_onnx_s, 1), "merged": round(export_merged_s, 1)},
        "median_prompt_tokens": statistics.median(len(p) for p in prompts),
    }
    print(json.dumps(record, separators=(",", ":")), flush=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
