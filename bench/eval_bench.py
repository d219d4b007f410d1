"""Benchmark: evaluation throughput on the CPU (examples/s), anytune against the loop a user would write.

    python bench/eval_bench.py [--hidden 512] [--layers 8] [--examples 64] [--new-tokens 32] [--batch-size 8] [--smoke]

One Llama-shaped model and LoRA adapter built here from a seed, and held-out chat examples of the
shape the samples have. Both sides evaluate the fine-tuned model (adapter on) on the same examples:

* loss: anytune's ``WeightsAnswerer.loss`` (batches of ``--batch-size``, sequences of like length
  together, the LM head only on the assistant tokens) against ``model(input_ids, labels=...)`` one
  example at a time with the same labels (what the transformers documentation shows), full logits;
  both sides tokenize inside the timed loop;
* generation: anytune's batched greedy ``generate`` (left-padded) against one ``generate`` call per
  example, ``--new-tokens`` each at most.

The bench checks both sides agree (losses within 1e-4 relative, the same answers) and prints
examples/s, ratios and one JSON line. Threads: PyTorch's default (every core) for both.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

QUESTIONS = [
    "What is the capital of France?",
    "How many days are in a week?",
    "Name a primary colour.",
    "What is two plus three?",
    "Describe the sea in a few words.",
    "Spell the word tiger backwards.",
    "Give me a word that rhymes with light.",
    "What is the opposite of cold?",
]


def examples(n: int) -> list[list[dict[str, str]]]:
    out = []
    for i in range(n):
        q = QUESTIONS[i % len(QUESTIONS)] + (" Please answer briefly." * (i % 3))
        a = f"Answer number {i}: " + "the quick brown fox jumps over the lazy dog " * (1 + i % 4)
        out.append(
            [
                {"role": "system", "content": "You are helpful."},
                {"role": "user", "content": q},
                {"role": "assistant", "content": a.strip()},
            ]
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--smoke", action="store_true", help="a tiny model and 6 examples: checks the plumbing")
    args = parser.parse_args(argv)
    if args.smoke:
        args.hidden, args.layers, args.examples, args.new_tokens, args.batch_size = 64, 2, 6, 4, 3

    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from anytune._eval.report import GenerationSettings
    from anytune.local_backend.evaluate import WeightsAnswerer
    from anytune.local_backend.inference import load
    from anytune.local_backend.tiny import build_tiny_model

    convs = examples(args.examples)
    with tempfile.TemporaryDirectory(prefix="anytune-eval-bench-") as tmp:
        root = Path(tmp)
        heads = max(2, args.hidden // 64)
        base = build_tiny_model(
            root / "base",
            hidden_size=args.hidden,
            num_layers=args.layers,
            num_heads=heads,
            num_kv_heads=max(1, heads // 2),
        )
        torch.manual_seed(0)
        model = get_peft_model(
            AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=16, lora_alpha=32, target_modules="all-linear")
        )
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0.0, 0.02)
        model.save_pretrained(root / "adapter")

        loaded = load(root / "adapter", base_model=str(base), device="cpu")
        loaded.model.generation_config.bad_words_ids = None  # the same decoding on both sides
        ours = WeightsAnswerer(loaded, adapter=True, name="anytune")
        settings = GenerationSettings(max_new_tokens=args.new_tokens, batch_size=args.batch_size)
        batches = [convs[i : i + args.batch_size] for i in range(0, len(convs), args.batch_size)]

        ours.loss(batches[0])  # warm-up
        t0 = time.perf_counter()
        our_losses = [x for b in batches for x in ours.loss(b)]
        loss_ours_s = time.perf_counter() - t0

        from anytune.local_backend.data import encode_conversation

        peer: Any = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(root / "adapter")).eval()
        peer.generation_config.bad_words_ids = None

        def peer_loss(conversation: list[dict[str, str]]) -> tuple[float, int]:
            # The same labels (assistant tokens), tokenized inside the timed loop as anytune's are.
            e = encode_conversation(loaded.tokenizer, conversation)
            ids = torch.as_tensor(e.input_ids, dtype=torch.long)[None]
            labels = torch.where(torch.as_tensor(e.learn)[None], ids, torch.tensor(-100))
            with torch.inference_mode():
                out = peer(input_ids=ids, labels=labels)
            n = int(e.learn[1:].sum())
            return float(out.loss) * n, n

        peer_loss(convs[0])
        t0 = time.perf_counter()
        peer_losses = [peer_loss(c) for c in convs]
        loss_peer_s = time.perf_counter() - t0
        same_loss = all(
            a is not None and abs(a[0] / a[1] - b[0] / b[1]) <= 1e-4 * abs(b[0] / b[1])
            for a, b in zip(our_losses, peer_losses, strict=True)
        )

        prompts = [c[:-1] for c in convs]
        prompt_batches = [prompts[i : i + args.batch_size] for i in range(0, len(prompts), args.batch_size)]
        ours.answer(prompt_batches[0], settings)
        t0 = time.perf_counter()
        our_answers = [a for b in prompt_batches for a in ours.answer(b, settings)]
        gen_ours_s = time.perf_counter() - t0

        def peer_answer(messages: list[dict[str, str]]) -> str:
            text = loaded.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = loaded.tokenizer(text, return_tensors="pt", add_special_tokens=False)
            with torch.inference_mode():
                out = peer.generate(
                    **ids, max_new_tokens=args.new_tokens, do_sample=False, pad_token_id=loaded.tokenizer.pad_token_id
                )
            return (
                str(loaded.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
                .rstrip("\ufffd")
                .strip()
            )

        peer_answer(prompts[0])
        t0 = time.perf_counter()
        peer_answers = [peer_answer(p) for p in prompts]
        gen_peer_s = time.perf_counter() - t0
    agree = sum(a == b for a, b in zip(our_answers, peer_answers, strict=True))
    n = len(convs)
    rates = {
        "loss": {"anytune": n / loss_ours_s, "loop": n / loss_peer_s},
        "generation": {"anytune": n / gen_ours_s, "loop": n / gen_peer_s},
    }
    shape = f"model: hidden {args.hidden}, {args.layers} layers; {n} examples; batch {args.batch_size}"
    print(f"{shape}; {args.new_tokens} new tokens; torch threads {torch.get_num_threads()}")
    print(f"{'':11} {'anytune ex/s':>13} {'loop ex/s':>10} {'ratio':>6}")
    for kind, r in rates.items():
        print(f"{kind:11} {r['anytune']:13.2f} {r['loop']:10.2f} {r['anytune'] / r['loop']:6.2f}x")
    print(f"losses agree: {same_loss}; answers equal: {agree}/{n}")
    record = {
        "bench": "evaluation",
        "hidden": args.hidden,
        "layers": args.layers,
        "examples": n,
        "batch_size": args.batch_size,
        "new_tokens": args.new_tokens,
        "examples_per_s": {k: {s: round(v, 2) for s, v in r.items()} for k, r in rates.items()},
        "ratio_loss": round(rates["loss"]["anytune"] / rates["loss"]["loop"], 3),
        "ratio_generation": round(rates["generation"]["anytune"] / rates["generation"]["loop"], 3),
        "losses_agree": same_loss,
        "answers_equal": agree,
    }
    print(json.dumps(record, separators=(",", ":")), flush=True)
    return 0 if same_loss else 1


if __name__ == "__main__":
    sys.exit(main())
