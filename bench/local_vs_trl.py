"""anytune's local trainer against TRL's ``SFTTrainer``: same model, data, seed and LoRA, in one invocation.

Install the peer first (it is no dependency of anytune)::

    pip install -e ".[local]" -r bench/requirements.txt     # trl, datasets

Run::

    python bench/local_vs_trl.py                                        # CPU, ~34M-param Llama-shaped model
    python bench/local_vs_trl.py --device cuda --model qwen0.5b         # Qwen2.5-0.5B shape, bf16 LoRA
    python bench/local_vs_trl.py --device cuda --model llama8b          # Llama-3-8B shape, bf16 LoRA
    python bench/local_vs_trl.py --device cuda --model llama8b --quant 4bit   # QLoRA (NF4)

**Fixture.** A random-weight decoder (nothing is downloaded: ``tiny`` is written to disk like any
Hugging Face folder; the GPU shapes are built directly on the device from their config), a byte-level
BPE tokenizer trained on the fixture's own text, and a chat dataset whose turn lengths are
log-normal (long-tailed, like real SFT data), 35% of it multi-turn and 40% with a system prompt;
conversations longer than ``--max-length`` tokens are left out so that neither trainer truncates.
LoRA r=16, alpha=32, dropout 0.05 on every linear layer; lr 2e-4, linear decay, no warm-up; AdamW
(fused), gradient clipping at 1.0, same seed.

**Same targets.** Both trainers compute the loss on the assistant turns only: the fixture's ChatML
template carries ``{% generation %}`` markers, which TRL's ``assistant_only_loss=True`` needs, and
the bench checks that TRL's assistant mask and anytune's labels select the same tokens
(the content and the end-of-turn token of each assistant message).

**Same data per step.** anytune's ``batch_size`` counts examples per optimizer step whatever the
layout; TRL's ``per_device_train_batch_size`` counts rows, and with ``packing=True`` a row holds
``max_length`` tokens of several examples. The packed TRL run therefore gets
``round(batch * rows / examples)`` rows per step (rows counted with best-fit-decreasing, as TRL
packs), which is about ``batch`` examples per step; the table shows each run's measured examples
per step.

**Measurement.** Each run is its own subprocess (peak RSS, and ``torch.cuda.max_memory_allocated``
on a GPU, are per run). Every run does ``--warmup`` optimizer steps that are not timed, then
``--steps`` timed steps; throughput is real (non-padding) input tokens over the wall time of those
steps. TRL runs as a speed-minded user would set it up: fp32 on CPU, bf16 on CUDA, gradient
checkpointing off (on for QLoRA, for both trainers), once padded to the longest row of the batch
and once packed (``packing_strategy="bfd"``, padding-free). anytune runs through
``run_training`` on a run directory, the code the ``local`` provider's worker runs.

On CUDA the bench also reports MFU = tokens/s x (6 N + attention FLOPs per token) / 989 TFLOP/s
(H100 SXM bf16 dense peak), N = all parameters except the input embedding, attention FLOPs per
token = 3 (forward + backward) x 4 x layers x heads x head_dim x (causal pairs per sequence) averaged
over the fixture's sequences. The standard 6N counts weight gradients a LoRA run does not compute,
so a LoRA run's hardware FLOPs are nearer 4N.

The last line printed is one JSON object: ``{"bench": "local_vs_trl", ...}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

H100_BF16_PEAK = 989e12

SHAPES: dict[str, dict[str, Any]] = {
    # seconds: checks the bench itself
    "smoke": {
        "arch": "llama",
        "hidden_size": 128,
        "num_layers": 2,
        "num_heads": 4,
        "num_kv_heads": 2,
        "intermediate_size": 384,
        "vocab_size": 4096,
        "tie": False,
        "rope_theta": 10000.0,
        "max_position_embeddings": 2048,
    },
    # ~34M parameters: minutes on two CPU cores. A 32k vocabulary like Llama-2's: the LM head matters.
    "tiny": {
        "arch": "llama",
        "hidden_size": 384,
        "num_layers": 6,
        "num_heads": 6,
        "num_kv_heads": 2,
        "intermediate_size": 1024,
        "vocab_size": 32000,
        "tie": False,
        "rope_theta": 10000.0,
        "max_position_embeddings": 2048,
    },
    "qwen0.5b": {
        "arch": "qwen2",
        "hidden_size": 896,
        "num_layers": 24,
        "num_heads": 14,
        "num_kv_heads": 2,
        "intermediate_size": 4864,
        "vocab_size": 151936,
        "tie": True,
        "rope_theta": 1000000.0,
        "max_position_embeddings": 32768,
    },
    "llama8b": {
        "arch": "llama",
        "hidden_size": 4096,
        "num_layers": 32,
        "num_heads": 32,
        "num_kv_heads": 8,
        "intermediate_size": 14336,
        "vocab_size": 128256,
        "tie": False,
        "rope_theta": 500000.0,
        "max_position_embeddings": 8192,
    },
}

# ChatML (as anytune's tiny models and Qwen use it) with the generation markers TRL needs for
# assistant-only loss. It renders exactly like anytune.local_backend.tiny.CHATML_TEMPLATE.
TRAINING_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\n' }}{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{- '\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)

LORA = {"r": 16, "alpha": 32, "dropout": 0.05}
LEARNING_RATE = 2e-4
RESULT_TAG = "BENCH_RESULT "


# -- fixture -----------------------------------------------------------------------------------------


def _lexicon(rng: random.Random, size: int) -> list[str]:
    onsets = ["", "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "st", "tr", "pl"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ou", "ea"]
    codas = ["", "", "n", "r", "s", "t", "l", "nd", "ck"]
    words: set[str] = set()
    while len(words) < size:
        syllables = rng.choices([1, 2, 3, 4], weights=[30, 40, 22, 8])[0]
        words.add("".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(syllables)))
    return sorted(words)


def _conversations(n: int, seed: int) -> list[dict[str, Any]]:
    """Chat examples with log-normal (long-tailed) turn lengths, some multi-turn, some with a system prompt."""
    rng = random.Random(seed)
    words = _lexicon(rng, 8000)
    cum: list[float] = []
    total = 0.0
    for rank in range(len(words)):
        total += 1.0 / (rank + 1) ** 1.07  # Zipf-like word frequencies
        cum.append(total)

    def text(mu_words: float, sigma: float, cap: int) -> str:
        count = max(1, min(cap, int(rng.lognormvariate(math.log(mu_words), sigma))))
        out = rng.choices(words, cum_weights=cum, k=count)
        sentence: list[str] = []
        pieces: list[str] = []
        for w in out:
            sentence.append(w)
            if len(sentence) >= rng.randint(6, 18):
                pieces.append(" ".join(sentence).capitalize() + rng.choice([".", ".", ".", "?", "!", ","]))
                sentence = []
        if sentence:
            pieces.append(" ".join(sentence).capitalize() + ".")
        return " ".join(pieces)

    convs = []
    for _ in range(n):
        messages: list[dict[str, str]] = []
        if rng.random() < 0.4:
            messages.append({"role": "system", "content": text(12, 0.6, 60)})
        turns = rng.choices([1, 2, 3, 4], weights=[65, 20, 10, 5])[0]
        for _ in range(turns):
            messages.append({"role": "user", "content": text(22, 1.0, 400)})
            messages.append({"role": "assistant", "content": text(60, 1.0, 450)})
        convs.append({"messages": messages})
    return convs


def _model_config(shape: dict[str, Any], eos_id: int, bos_id: int) -> Any:
    from transformers import LlamaConfig, Qwen2Config

    common = {
        "vocab_size": shape["vocab_size"],
        "hidden_size": shape["hidden_size"],
        "intermediate_size": shape["intermediate_size"],
        "num_hidden_layers": shape["num_layers"],
        "num_attention_heads": shape["num_heads"],
        "num_key_value_heads": shape["num_kv_heads"],
        "max_position_embeddings": shape["max_position_embeddings"],
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": eos_id,
        "rms_norm_eps": 1e-6,
        "rope_theta": shape["rope_theta"],
        "tie_word_embeddings": shape["tie"],
    }
    if shape["arch"] == "qwen2":
        return Qwen2Config(use_sliding_window=False, **common)
    return LlamaConfig(**common)


def build_fixture(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Write the model folder (tokenizer, config, and weights for ``tiny``) and ``train.jsonl``."""
    import numpy as np
    from transformers import AutoTokenizer

    from anytune.local_backend import data as D
    from anytune.local_backend.tiny import build_tiny_model

    folder.mkdir(parents=True, exist_ok=True)
    model_dir = folder / "model"
    pool = _conversations(int(args.examples * 1.5) + 64, args.seed)
    texts = [m["content"] for c in pool for m in c["messages"]]
    # A throwaway 1-layer model gives the tokenizer files (BPE trained on the fixture's text).
    build_tiny_model(
        model_dir,
        hidden_size=64,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        texts=texts,
        vocab_size=min(SHAPES[args.model]["vocab_size"], 32000),
        seed=args.seed,
    )
    for f in model_dir.glob("*.safetensors"):
        f.unlink()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = TRAINING_TEMPLATE
    tokenizer.save_pretrained(model_dir)

    examples, lengths, targets = [], [], []
    for conv in pool:
        enc = D.encode_conversation(tokenizer, conv["messages"])
        if len(enc) > args.max_length:
            continue
        examples.append(conv)
        lengths.append(len(enc))
        targets.append(enc.num_targets)
        if len(examples) == args.examples:
            break
    # TRL's assistant mask must select the tokens anytune learns (checked on a sample).
    mismatched = 0
    for conv in examples[:64]:
        enc = D.encode_conversation(tokenizer, conv["messages"])
        out = tokenizer.apply_chat_template(
            conv["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        mask = np.asarray(out["assistant_masks"], dtype=bool)
        mismatched += int(list(out["input_ids"]) != enc.input_ids.tolist() or not np.array_equal(mask, enc.learn))
    with (folder / "train.jsonl").open("w", encoding="utf-8") as f:
        for conv in examples:
            f.write(json.dumps(conv) + "\n")

    shape = SHAPES[args.model]
    config = _model_config(shape, tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|endoftext|>"))
    config.save_pretrained(model_dir)
    if args.model in ("tiny", "smoke") and args.device == "cpu":
        import torch

        torch.manual_seed(args.seed)
        model = random_model(config, torch.device("cpu"), torch.float32, quant4=False)
        model.save_pretrained(model_dir)
        del model
    rows = len(D.pack_best_fit(lengths, args.max_length))
    lengths_arr = np.asarray(lengths, dtype=np.float64)
    stats = {
        "examples": len(examples),
        "tokens": int(lengths_arr.sum()),
        "targets": int(sum(targets)),
        "mean_len": round(float(lengths_arr.mean()), 1),
        "median_len": float(np.median(lengths_arr)),
        "p90_len": float(np.percentile(lengths_arr, 90)),
        "max_len": int(lengths_arr.max()),
        "multi_turn": sum(sum(m["role"] == "assistant" for m in c["messages"]) > 1 for c in examples),
        "packed_rows": rows,
        "trl_rows_per_step": max(1, round(args.batch_size * rows / len(examples))),
        "mask_mismatches": mismatched,
        "attn_pairs": float(sum(n * (n + 1) / 2 for n in lengths)),
    }
    (folder / "fixture.json").write_text(json.dumps(stats))
    return stats


# -- models ------------------------------------------------------------------------------------------


def random_model(config: Any, device: Any, dtype: Any, *, quant4: bool) -> Any:
    """A randomly initialised causal LM built directly on ``device`` (4-bit NF4 linears if ``quant4``).

    The LM head gets unit-variance logits (std 1/sqrt(hidden)), as ``build_tiny_model`` does, so that a
    LoRA adapter can visibly lower the loss of a random model.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if quant4:
        model = _random_4bit(config, device, dtype)
    else:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    with torch.no_grad():
        model.get_output_embeddings().weight.normal_(0.0, config.hidden_size**-0.5)
    return model


def _random_4bit(config: Any, device: Any, dtype: Any) -> Any:
    """QLoRA's base without a checkpoint: each linear layer is made in 16-bit, quantized to NF4, freed.

    Matches what ``from_pretrained(quantization_config=BitsAndBytesConfig(load_in_4bit=True,
    bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, ...))`` gives: 4-bit decoder linears,
    16-bit embeddings, norms and LM head; peak memory stays near the 4-bit size.
    """
    import bitsandbytes as bnb
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    head = model.get_output_embeddings()
    storage = dtype if device.type == "cuda" else torch.uint8
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, torch.nn.Linear) or child is head:
                continue
            layer = bnb.nn.Linear4bit(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                compute_dtype=dtype,
                compress_statistics=True,
                quant_type="nf4",
                quant_storage=storage,
                device="meta",
            )
            w = torch.empty(child.out_features, child.in_features, dtype=dtype, device=device).normal_(0.0, 0.02)
            layer.weight = bnb.nn.Params4bit(
                w, requires_grad=False, compress_statistics=True, quant_type="nf4", quant_storage=storage, module=layer
            ).to(device)
            del w
            if child.bias is not None:
                layer.bias = torch.nn.Parameter(
                    torch.zeros(child.out_features, dtype=dtype, device=device), requires_grad=False
                )
            setattr(parent, name, layer)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if "RotaryEmbedding" in type(child).__name__:
                with torch.device(device):
                    setattr(parent, name, type(child)(config=config))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, bnb.nn.Linear4bit):
                continue
            if any(t.is_meta for t in (*module.parameters(recurse=False), *module.buffers(recurse=False))):
                module.to_empty(device=device, recurse=False)
                for pname, p in module.named_parameters(recurse=False):
                    if p.dim() == 1:
                        p.fill_(1.0 if "weight" in pname else 0.0)
                    else:
                        p.normal_(0.0, 0.02)
    if config.tie_word_embeddings:
        model.tie_weights()
    model.is_loaded_in_4bit = True
    return model


def _install_random_loader(device: Any, seed: int) -> None:
    """Make ``AutoModelForCausalLM.from_pretrained`` build the fixture's config with random weights.

    The GPU shapes are far too big to write to disk and read back for a speed benchmark: anytune's
    loader gets the same random model, built on the device, that the TRL run is handed.
    """
    import torch
    import transformers

    original = transformers.AutoModelForCausalLM.from_pretrained

    def from_pretrained(source: str, *args: Any, **kwargs: Any) -> Any:
        config = transformers.AutoConfig.from_pretrained(source)
        if (Path(source) / "model.safetensors").exists():
            return original(source, *args, **kwargs)
        qc = kwargs.get("quantization_config")
        quant4 = bool(qc is not None and getattr(qc, "load_in_4bit", False))
        torch.manual_seed(seed)
        return random_model(config, device, kwargs.get("dtype", torch.bfloat16), quant4=quant4)

    transformers.AutoModelForCausalLM.from_pretrained = from_pretrained  # type: ignore[method-assign]


# -- the runs (each in its own process) -------------------------------------------------------------


def _peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_anytune(fixture: Path, args: argparse.Namespace, stats: dict[str, Any]) -> dict[str, Any]:
    import torch

    from anytune._spec import JobSpec
    from anytune.local_backend.rundir import RunDir
    from anytune.local_backend.train import run_training

    _install_random_loader(torch.device(args.device), args.seed)
    steps = args.warmup + args.steps
    spec = JobSpec.model_validate(
        {
            "base_model": str(fixture / "model"),
            "training_file": str(fixture / "train.jsonl"),
            "lora": {**LORA, "target_modules": "all-linear"},
            "quantization": "4bit" if args.quant == "4bit" else "none",
            "hyperparameters": {
                "batch_size": args.batch_size,
                "max_length": args.max_length,
                "max_steps": steps,
                "learning_rate": LEARNING_RATE,
                "warmup_steps": 0,
                "seed": args.seed,
            },
            "local": {
                "device": args.device,
                "logging_steps": args.warmup,
                "gradient_checkpointing": _checkpointing(args),
            },
        }
    )
    run = RunDir(Path(tempfile.mkdtemp(prefix="anytune-bench-")) / "run")
    run.create(spec, idempotency_key="bench")
    try:
        result = run_training(run)
        points = [json.loads(line) for line in run.metrics_file.read_text().splitlines() if line.strip()]
    finally:
        shutil.rmtree(run.path.parent, ignore_errors=True)
    first = points[0]  # the warm-up window
    warm_seconds = first["tokens_seen"] / first["tokens_per_second"]
    tokens = result["train_tokens"] - first["tokens_seen"]
    seconds = result["train_seconds"] - warm_seconds
    return {
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "steps": result["steps"] - args.warmup,
        "examples_per_step": float(args.batch_size),
        "final_loss": result["final_train_loss"],
        "peak_rss_mib": result["peak_rss_mib"],
        "peak_gpu_mib": result.get("peak_gpu_mib"),
        "layout": result["layout"],
        "gradient_checkpointing": result["gradient_checkpointing"],
        "result_fields": sorted(
            k for k in ("train_tokens", "train_seconds", "peak_rss_mib", "peak_gpu_mib") if k in result
        ),
    }


def _checkpointing(args: argparse.Namespace) -> bool:
    if args.gradient_checkpointing == "auto":
        return args.quant == "4bit"  # QLoRA is chosen for memory: both trainers recompute activations
    return args.gradient_checkpointing == "on"


def run_trl(fixture: Path, args: argparse.Namespace, stats: dict[str, Any], *, packing: bool) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    cuda = args.device == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    quant4 = args.quant == "4bit"
    tokenizer = AutoTokenizer.from_pretrained(fixture / "model")
    torch.manual_seed(args.seed)
    if (fixture / "model" / "model.safetensors").exists():
        extra: dict[str, Any] = {}
        if quant4:
            from transformers import BitsAndBytesConfig

            extra = {
                "device_map": {"": args.device},
                "quantization_config": BitsAndBytesConfig(
                    load_in_4bit=True,
                    bnb_4bit_quant_type="nf4",
                    bnb_4bit_use_double_quant=True,
                    bnb_4bit_compute_dtype=dtype,
                    bnb_4bit_quant_storage=dtype if cuda else torch.uint8,
                ),
            }
        model = AutoModelForCausalLM.from_pretrained(fixture / "model", dtype=dtype, **extra)
    else:  # the GPU shapes: the same random model anytune's run builds
        model = random_model(
            AutoConfig.from_pretrained(fixture / "model"), torch.device(args.device), dtype, quant4=quant4
        )
    model.config.use_cache = False
    examples = [json.loads(line) for line in (fixture / "train.jsonl").read_text().splitlines() if line.strip()]
    dataset = Dataset.from_list(examples)
    rows = stats["trl_rows_per_step"] if packing else args.batch_size
    steps = args.warmup + args.steps
    out_dir = tempfile.mkdtemp(prefix="trl-bench-")
    config = SFTConfig(
        output_dir=out_dir,
        max_steps=steps,
        per_device_train_batch_size=rows,
        gradient_accumulation_steps=1,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch_fused",
        seed=args.seed,
        data_seed=args.seed,
        bf16=cuda,
        fp16=False,
        use_cpu=not cuda,
        gradient_checkpointing=_checkpointing(args),
        max_length=args.max_length,
        packing=packing,
        assistant_only_loss=True,
        logging_steps=args.warmup,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    peft_config = LoraConfig(
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        target_modules="all-linear",
        bias="none",
        task_type="CAUSAL_LM",
    )

    marks: list[float] = []

    class Timer(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, *a: Any, **k: Any) -> None:
            if cuda:
                torch.cuda.synchronize()
            marks.append(time.perf_counter())

    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[Timer()],
    )
    counts: list[tuple[int, int]] = []
    collate = trainer.data_collator

    def counting(features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collate(features)
        real = int(batch["attention_mask"].sum()) if "attention_mask" in batch else int(batch["input_ids"].numel())
        counts.append((real, len(features)))
        return batch

    trainer.data_collator = counting
    trainer.train()
    timed = counts[args.warmup : steps]
    examples_per_row = len(examples) / len(trainer.train_dataset)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    shutil.rmtree(out_dir, ignore_errors=True)
    return {
        "tokens": sum(c[0] for c in timed),
        "seconds": round(marks[steps - 1] - marks[args.warmup - 1], 3),
        "steps": len(timed),
        "examples_per_step": round(sum(c[1] for c in timed) / len(timed) * examples_per_row, 2),
        "rows_per_step": rows,
        "final_loss": losses[-1] if losses else None,
        "peak_rss_mib": _peak_rss_mib(),
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
        "gradient_checkpointing": config.gradient_checkpointing,
    }


RUNS = {
    "anytune": lambda fx, a, s: run_anytune(fx, a, s),
    "trl": lambda fx, a, s: run_trl(fx, a, s, packing=False),
    "trl_packed": lambda fx, a, s: run_trl(fx, a, s, packing=True),
}


def worker(name: str, fixture: Path, args: argparse.Namespace) -> None:
    stats = json.loads((fixture / "fixture.json").read_text())
    out = RUNS[name](fixture, args, stats)
    print(RESULT_TAG + json.dumps(out), flush=True)


# -- the parent --------------------------------------------------------------------------------------


def _spawn(name: str, fixture: Path, args: argparse.Namespace, log: Path) -> dict[str, Any] | None:
    cmd = [sys.executable, __file__, "--worker", name, "--fixture", str(fixture), *sys.argv[1:]]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    started = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, check=False)
    text = log.read_text(errors="replace")
    for line in text.splitlines()[::-1]:
        if line.startswith(RESULT_TAG):
            res: dict[str, Any] = json.loads(line[len(RESULT_TAG) :])
            res["wall_s"] = round(time.perf_counter() - started, 1)
            return res
    print(f"  {name} failed (exit {proc.returncode}); last lines of {log}:", file=sys.stderr)
    print("\n".join(text.splitlines()[-25:]), file=sys.stderr)
    return None


def _flops_per_token(args: argparse.Namespace, stats: dict[str, Any]) -> tuple[float, float]:
    s = SHAPES[args.model]
    h, layers, inter, vocab = s["hidden_size"], s["num_layers"], s["intermediate_size"], s["vocab_size"]
    head_dim = h // s["num_heads"]
    kv = s["num_kv_heads"] * head_dim
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * inter + (h + 2 * kv if s["arch"] == "qwen2" else 0)
    n = layers * per_layer + vocab * h  # input embedding excluded (a lookup); the head is a matmul
    attn = 3 * 4 * layers * h * stats["attn_pairs"] / stats["tokens"]
    return float(n), attn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--model", choices=sorted(SHAPES), default=None, help="default: tiny (cpu), qwen0.5b (cuda)")
    parser.add_argument("--quant", choices=["none", "4bit"], default="none")
    parser.add_argument("--runs", default="anytune,trl,trl_packed", help="comma-separated: " + ",".join(RUNS))
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first")
    parser.add_argument("--batch-size", type=int, default=8, help="examples per optimizer step")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--gradient-checkpointing",
        choices=["auto", "on", "off"],
        default="auto",
        help="auto: off, except on for QLoRA (both trainers alike)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep the fixture and logs here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--fixture", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.model = args.model or ("tiny" if args.device == "cpu" else "qwen0.5b")
    if args.steps % args.warmup:
        parser.error("--steps must be a multiple of --warmup (anytune logs one point per --warmup steps)")
    if args.worker:
        worker(args.worker, args.fixture, args)
        return 0

    work = args.workdir or Path(tempfile.mkdtemp(prefix="local-vs-trl-"))
    fixture = work / f"fixture-{args.model}"
    t0 = time.perf_counter()
    stats = build_fixture(fixture, args)
    print(
        f"fixture: {args.model} ({args.device}, quant {args.quant}), {stats['examples']} conversations, "
        f"{stats['multi_turn']} multi-turn, tokens/conv mean {stats['mean_len']} median {stats['median_len']} "
        f"p90 {stats['p90_len']} max {stats['max_len']}; TRL assistant mask == anytune labels on 64 samples: "
        f"{'yes' if stats['mask_mismatches'] == 0 else 'NO (' + str(stats['mask_mismatches']) + ' differ)'}; "
        f"built in {time.perf_counter() - t0:.0f}s",
        flush=True,
    )
    results: dict[str, dict[str, Any]] = {}
    for name in [r.strip() for r in args.runs.split(",") if r.strip()]:
        print(f"running {name} ...", flush=True)
        res = _spawn(name, fixture, args, work / f"{args.model}-{name}.log")
        if res is not None:
            res["tokens_per_s"] = round(res["tokens"] / res["seconds"], 1)
            results[name] = res

    gpu = args.device == "cuda"
    mem_key = "peak_gpu_mib" if gpu else "peak_rss_mib"
    n_params, attn = _flops_per_token(args, stats)
    print()
    header = f"{'run':<11} {'tok/s':>9} {'ex/step':>7} {'peak RSS MiB':>12}"
    header += f" {'peak GPU MiB':>12} {'MFU':>6}" if gpu else ""
    header += f" {'final loss':>10} {'steps':>5} {'wall s':>6}"
    print(header)
    for name, r in results.items():
        line = f"{name:<11} {r['tokens_per_s']:>9.1f} {r['examples_per_step']:>7.2f} {r['peak_rss_mib']:>12.0f}"
        if gpu:
            r["mfu"] = round(r["tokens_per_s"] * (6 * n_params + attn) / H100_BF16_PEAK, 4)
            line += f" {r['peak_gpu_mib']:>12.0f} {r['mfu']:>6.1%}"
        loss = f"{r['final_loss']:.4f}" if r.get("final_loss") is not None else "-"
        line += f" {loss:>10} {r['steps']:>5} {r['wall_s']:>6.0f}"
        print(line)
    trl = {k: v for k, v in results.items() if k.startswith("trl")}
    summary: dict[str, Any] = {
        "bench": "local_vs_trl",
        "device": args.device,
        "model": args.model,
        "quant": args.quant,
        "params_m": round(
            (
                n_params
                + SHAPES[args.model]["vocab_size"]
                * SHAPES[args.model]["hidden_size"]
                * (0 if SHAPES[args.model]["tie"] else 1)
            )
            / 1e6,
            1,
        ),
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "timed_steps": args.steps,
        "warmup_steps": args.warmup,
        "cpu_threads": os.cpu_count(),
        "runs": {
            k: {
                f: v.get(f)
                for f in (
                    "tokens_per_s",
                    "examples_per_step",
                    "peak_rss_mib",
                    "peak_gpu_mib",
                    "mfu",
                    "final_loss",
                    "gradient_checkpointing",
                )
            }
            for k, v in results.items()
        },
    }
    any_res = results.get("anytune")
    if any_res and trl:
        best = max(trl, key=lambda k: trl[k]["tokens_per_s"])
        speedup = any_res["tokens_per_s"] / trl[best]["tokens_per_s"]
        mem_ratio = any_res[mem_key] / trl[best][mem_key]
        goal = 1.3 if gpu else 1.5
        summary.update(
            {
                "best_trl": best,
                "speedup": round(speedup, 3),
                "memory_key": mem_key,
                "memory_ratio": round(mem_ratio, 3),
                "memory_ratio_vs_lowest_trl": round(any_res[mem_key] / min(v[mem_key] for v in trl.values()), 3),
                "goal_speedup": goal,
                "speed_goal_met": speedup >= goal,
                "memory_goal_met": mem_ratio <= 1.0,
            }
        )
        print(
            f"\nanytune / {best} (the faster TRL run): {speedup:.2f}x tokens/s (goal {goal}x), "
            f"{mem_ratio:.2f}x {mem_key}"
        )
        if gpu and args.model == "llama8b" and args.quant == "none":
            summary["mfu_goal_met"] = any_res.get("mfu", 0.0) >= 0.45
        if gpu and args.model == "llama8b" and args.quant == "4bit":
            summary["qlora_under_10gib"] = any_res["peak_gpu_mib"] < 10 * 1024
        if gpu:
            summary["mfu_formula"] = "tok/s*(6N+attn)/989e12, N excl. input embedding"
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
